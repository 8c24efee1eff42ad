"""The front-door seam: what a door gives the router, and what the router asks of a door.

The router's internal request is an OpenAI chat (or embeddings) body, because that is what every
adapter takes. A door that is not chat completions translates its dialect into one, and keeps
the client's own body for *native pass-through*: when a candidate's adapter speaks the door's
dialect (``Adapter.native_dialects``), the router calls ``Adapter.send_native`` with the
client's body instead, and the answer's bytes go back untouched.

Routing, fallback, circuits, provider and client limits, timeouts and the history row are the
router's alone; a door only parses and renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from providers.base import ChatStream, Reply
from router.errors import RouterError, UpstreamStatusError

# A shared immutable default: no dict is built per request on the chat path.
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class RouterRequest:
    """One client request, as the router routes it.

    ``body`` is what ``Adapter.chat``/``chat_stream``/``embeddings`` get. ``native`` is the
    client's body in the door's dialect (for ``Adapter.send_native``), with ``native_headers``
    the client headers that travel with it (``anthropic-version``, say). ``state`` is the door's
    own (what it needs to render the answer). ``untranslatable``: why ``body`` could not be
    built (a valid request only a native provider can take): the router then tries only the
    candidates that speak the door's dialect, and answers this error when there are none.
    """

    # A plain class with slots: built once per request on the hot path, with no dict made for
    # the defaults (a dataclass would need a default factory for native_headers).
    __slots__ = (
        "body", "embeddings", "model", "native", "native_headers", "state", "stream",
        "untranslatable",
    )  # fmt: skip

    def __init__(
        self,
        model: str,
        body: dict[str, Any],
        *,
        stream: bool = False,
        embeddings: bool = False,
        native: dict[str, Any] | None = None,
        native_headers: Mapping[str, str] = _NO_HEADERS,
        state: Any = None,
    ) -> None:
        self.model = model
        self.body = body
        self.stream = stream
        self.embeddings = embeddings
        self.native = native
        self.native_headers = native_headers
        self.state = state
        self.untranslatable: RouterError | None = None


class FrontDoor:
    """One client dialect. Subclasses override what differs from OpenAI chat completions.

    ``endpoint`` is the history and metrics label; ``dialect`` the native dialect an adapter may
    pass through (None: always translate through the chat interface).
    """

    endpoint: ClassVar[str]
    dialect: ClassVar[str | None] = None
    # False when the adapters' chat answers already are this door's answers (chat
    # completions): the router then skips reply() and stream(), leaving the bytes untouched.
    translates: ClassVar[bool] = True
    # Written after the last relayed block of a stream that ended well.
    stream_end: ClassVar[bytes] = b""
    # True when the door keeps state between requests (stored responses): the router then
    # awaits prepare() before routing. False spares the other doors that await.
    stateful: ClassVar[bool] = False

    def parse(self, raw: bytes, headers: list[tuple[bytes, bytes]]) -> RouterRequest:
        """Turn the client's body into the router's request; raise ``RouterError`` if bad."""
        raise NotImplementedError

    async def prepare(self, request: RouterRequest, owner: str | None, request_id: str) -> None:
        """A stateful door's work before routing (load what the request continues, say).

        ``owner`` is the caller's client key id (None: the admin token, or no keys in use);
        ``request_id`` the history row's id. Called only when ``stateful`` is true.
        """

    def reply(self, reply: Reply, request: RouterRequest) -> Reply:
        """A complete chat answer from an adapter, in the door's dialect."""
        return reply

    def stream(self, stream: ChatStream, request: RouterRequest) -> ChatStream:
        """A chat stream from an adapter, as the door's stream (its ``usage`` kept)."""
        return stream

    def native_answer(
        self, answer: Reply | ChatStream, request: RouterRequest
    ) -> Reply | ChatStream:
        """An answer passed through from an upstream that speaks the door's dialect, as it goes
        to the client (unchanged by default; a stateful door may watch it)."""
        return answer

    def error(self, exc: RouterError) -> tuple[int, bytes]:
        """The status and body of an error answered before the first byte."""
        return exc.status_code, exc.body()

    def upstream_error(self, exc: UpstreamStatusError) -> tuple[int, bytes, str]:
        """An upstream's own 4xx passed on to the client: (status, body, content type)."""
        return exc.status_code or 502, exc.body, exc.content_type

    def stream_error(self, exc: RouterError, request: RouterRequest | None = None) -> bytes:
        """The last event of a stream that broke off after its first byte (``request``: the
        request it answered, for a door whose events carry the stream's state)."""
        return b"data: " + exc.body() + b"\n\n"
