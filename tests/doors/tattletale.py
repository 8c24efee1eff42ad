"""A loopback listener that records every connection made to it: coding-agent tests point every
proxy variable at it, so any call an agent makes to something other than the gateway shows up
in ``seen`` (a plain helper; the fixtures are in the tests that use it)."""

from __future__ import annotations

import contextlib
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
