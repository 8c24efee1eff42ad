"""Loopback listeners for the coding-agent tests (plain helpers; fixtures are in the tests).

:class:`Tattletale` records every connection made to it: the tests point every proxy variable
at it, so any call an agent makes to something other than the gateway shows up in ``seen``.
:class:`Wiretap` forwards to the gateway and keeps the requests that went through.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
from collections.abc import Iterator


class Tattletale(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _Record)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Record(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(2)
        try:
            first = self.request.recv(200)
        except OSError:
            first = b"(nothing)"
        assert isinstance(self.server, Tattletale)
        self.server.seen.append(first)


@contextlib.contextmanager
def listening() -> Iterator[Tattletale]:
    """A running :class:`Tattletale`, shut down on the way out."""
    server = Tattletale()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Wiretap(socketserver.ThreadingTCPServer):
    """A loopback forwarder to ``target`` that keeps what clients sent, to read back the HTTP
    requests an agent made (an upgrade attempt leaves no row in the gateway's history)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = bytearray()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self) -> list[tuple[str, str, str | None]]:
        """(method, path, Upgrade header or None) of each request seen, in order."""
        with self.lock:
            sent = bytes(self.sent)
        found = []
        for head in _REQUEST_HEAD.finditer(sent):
            upgrade = _UPGRADE.search(head.group(3))
            found.append(
                (
                    head.group(1).decode(),
                    head.group(2).decode(),
                    upgrade.group(1).decode().lower() if upgrade else None,
                )
            )
        return found


_REQUEST_HEAD = re.compile(
    rb"^(GET|POST|DELETE|PUT|PATCH) (\S+) HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n", re.M
)
_UPGRADE = re.compile(rb"^upgrade:\s*(\S+)", re.M | re.I)


class _Forward(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, Wiretap)
        tap = self.server
        upstream = socket.create_connection(tap.target)
        back = threading.Thread(target=_pump, args=(upstream, self.request, None), daemon=True)
        back.start()
        _pump(self.request, upstream, tap)
        back.join(30)
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket, tap: Wiretap | None) -> None:
    try:
        while data := source.recv(65536):
            if tap is not None:
                with tap.lock:
                    tap.sent += data
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tapping(url: str) -> Iterator[Wiretap]:
    """A running :class:`Wiretap` in front of ``url`` (``http://host:port``)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    server = Wiretap((host, int(port)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
