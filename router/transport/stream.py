"""A response body, read from its connection as the bytes arrive."""

from __future__ import annotations

import httpx

from router.transport.connection import Connection
from router.transport.pool import OriginPool

__all__ = ["ResponseStream"]


class ResponseStream(httpx.AsyncByteStream):
    """The body of one response; closing it gives the connection and the slot back.

    A response closed before its body is complete closes its connection at once: that is how
    the proxy cancels an upstream stream when its own client goes away.
    """

    __slots__ = ("_closed", "_conn", "_pool", "_request", "_timeout")

    def __init__(
        self, conn: Connection, pool: OriginPool, request: httpx.Request, timeout: float | None
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._request = request
        self._timeout = timeout
        self._closed = False

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:  # the connection may carry someone else's request by now
            raise StopAsyncIteration
        data = await self._conn.next_body(self._request, self._timeout)
        if data is None:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        pool = self._pool
        if conn.finished_cleanly() and not pool.closed:
            pool.put_idle(conn)
            pool.release()
            return
        # An unfinished (or unusable) response: the socket must not carry another request.
        conn.abort()
        pool.release()
        await conn.wait_closed()
