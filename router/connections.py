"""Client connections under ``serve``: time limits on reading a request, a cap on how many are open.

uvicorn closes a keep-alive connection that stays idle between requests, but a client that
sends its request head or body slowly (a byte every few seconds), or announces a
``Content-Length`` it never sends, holds a connection, a file descriptor and a task for as long
as it likes. This module bounds that:

- a request head must arrive within ``server.header_timeout_ms`` of its first byte (or of the
  connection opening); after it, the client gets 408 and the connection closes;
- a request body must arrive within ``server.body_timeout_ms`` of the end of its head; after it,
  the connection closes (408 first, if no answer has started) and the endpoint reading it sees
  the client gone;
- past ``server.max_connections`` open connections a new one gets 503 (``gateway_overloaded``,
  ``Retry-After: 1``) and is closed at once, before it costs a task.

The protocol only notes the time a head or body began (attribute writes, no timer per request);
:class:`ClientServer` sweeps the open connections on uvicorn's own 100 ms tick, so a limit is
enforced within about 100 ms of its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import ClassVar

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.settings import Settings

log = logging.getLogger("provider_router.connections")

IDLE, HEAD, BODY = 0, 1, 2
# How often a refused connection is logged (with how many were refused since the last line).
_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ClientLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            settings.header_timeout_ms / 1000,
            settings.body_timeout_ms / 1000,
            settings.max_client_connections,
        )


def _answer(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error" if status.startswith(b"4")
                   else "service_unavailable", "param": None, "code": code}}
    )  # fmt: skip
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + extra + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


HEAD_TIMEOUT = _answer(
    b"408 Request Timeout",
    "request_timeout",
    "The request head did not arrive in time (server.header_timeout_ms).",
)
BODY_TIMEOUT = _answer(
    b"408 Request Timeout",
    "request_timeout",
    "The request body did not arrive in time (server.body_timeout_ms).",
)
OVERLOADED = _answer(
    b"503 Service Unavailable",
    "gateway_overloaded",
    "provider-router has too many open connections (server.max_connections); retry shortly.",
    b"retry-after: 1\r\n",
)


class ClientProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, noting when the head and body of each request began.

    Build a subclass bound to limits with :func:`protocol_for`.
    """

    limits: ClassVar[ClientLimits] = ClientLimits()
    refused: ClassVar[list[float]] = [0, 0.0]  # [refused since the last log line, its time]
    # The loop's clock as of the last tick (ClientServer sets it every 100 ms): noting when a
    # head or body began costs an attribute read, not a clock call, on every request.
    clock: ClassVar[float] = 0.0
    phase: int = IDLE
    since: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        full = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if full:
            self._refuse()
            return
        self.phase, self.since = HEAD, self.loop.time()

    # The base class is called by name, not through super(): these run for every request.
    def data_received(self, data: bytes) -> None:
        if self.phase == IDLE:
            # Bytes of a next request (or bare line breaks, which start no message): its head
            # is on the clock from now.
            self.phase, self.since = HEAD, self.clock
        HttpToolsProtocol.data_received(self, data)

    def on_headers_complete(self) -> None:
        self.phase, self.since = BODY, self.clock
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self.phase = IDLE
        HttpToolsProtocol.on_message_complete(self)

    def overdue(self, now: float) -> bool:
        """Close the connection if the head or body it is reading is late; True if it was."""
        phase = self.phase
        if phase == IDLE or self.transport.is_closing():
            return False
        if phase == HEAD:
            if self._answering():
                # Bytes sent while an answer still goes out (pipelining, a stray line break
                # after a body): the head's clock starts once the answer is done.
                self.since = now
                return False
            if now - self.since < self.limits.header_timeout_s:
                return False
            self.transport.write(HEAD_TIMEOUT)
        else:
            if now - self.since < self.limits.body_timeout_s:
                return False
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(BODY_TIMEOUT)
        self.phase = IDLE
        self.transport.close()
        return True

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self) -> None:
        self.phase = IDLE
        self.transport.write(OVERLOADED)
        self.transport.close()
        refused = type(self).refused
        refused[0] += 1
        now = time.monotonic()
        if now - refused[1] >= _LOG_INTERVAL_S:
            log.warning(
                "Refused %d client connection(s) with 503: %d are open, the limit "
                "(server.max_connections).",
                refused[0],
                self.limits.max_connections,
            )
            refused[0], refused[1] = 0, now


def protocol_for(limits: ClientLimits) -> type[ClientProtocol]:
    """A :class:`ClientProtocol` bound to ``limits`` (uvicorn builds protocols from a class)."""
    return type("BoundClientProtocol", (ClientProtocol,), {"limits": limits, "refused": [0, 0.0]})


class ClientServer(uvicorn.Server):
    """uvicorn's server, closing connections whose request is late on each tick."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        ClientProtocol.clock = asyncio.get_running_loop().time()
        await super().startup(sockets)

    async def on_tick(self, counter: int) -> bool:
        now = ClientProtocol.clock = asyncio.get_running_loop().time()
        for connection in list(self.server_state.connections):
            if isinstance(connection, ClientProtocol) and connection.phase:
                connection.overdue(now)
        return await super().on_tick(counter)


def configure(config: uvicorn.Config, limits: ClientLimits) -> uvicorn.Config:
    """Make ``config`` (not loaded yet) serve with :class:`ClientProtocol` under ``limits``."""
    config.http = protocol_for(limits)
    return config
