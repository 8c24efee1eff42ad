"""The connections to one origin (scheme, host, port), and the slots they are limited to.

A slot is one request in flight, on at most one connection. At most ``limit`` slots are taken;
a request that finds them all taken waits for one, first come first served, up to its ``pool``
timeout. Idle keep-alive connections are reused last in, first out, so the ones left idle the
longest expire first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl

import httpx

from router.transport.connection import Connection, describe, expire

__all__ = ["OriginPool"]


class OriginPool:
    """The connections to one origin and the slots (requests in flight) they are limited to."""

    __slots__ = (
        "_conns",
        "_expiry",
        "_host",
        "_idle",
        "_in_use",
        "_limit",
        "_port",
        "_server_hostname",
        "_ssl",
        "_waiters",
        "closed",
        "loop",
        "max_header_bytes",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        expiry: float | None,
        max_header_bytes: int = 64 * 1024,
    ) -> None:
        self.loop = loop
        self.max_header_bytes = max_header_bytes
        self.closed = False
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = host if ssl_context is not None else None
        self._limit = limit
        self._in_use = 0
        self._expiry = expiry
        # A stack: the connection parked last is reused first; the oldest sit at the left.
        self._idle: collections.deque[Connection] = collections.deque()
        self._conns: set[Connection] = set()
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()

    @property
    def idle_count(self) -> int:
        """How many idle connections wait for a request."""
        return len(self._idle)

    # -- slots ----------------------------------------------------------------------------------

    def take_slot(self) -> bool:
        """Take a free slot at once; False when all are taken (then ``acquire`` waits)."""
        if self._in_use < self._limit:
            self._in_use += 1
            return True
        return False

    async def acquire(self, request: httpx.Request, seconds: float | None) -> None:
        """Wait at most ``seconds`` for a slot (then ``httpx.PoolTimeout``)."""
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = None if seconds is None else self.loop.call_later(seconds, expire, waiter)
        try:
            granted = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # granted just as we were cancelled: pass the slot on
            else:
                self._forget_waiter(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not granted:
            self._forget_waiter(waiter)
            raise httpx.PoolTimeout("Timed out waiting for a free connection.", request=request)

    def release(self) -> None:
        """Give a slot back: to the longest waiting request, if any."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on; in_use stays
                return
        self._in_use -= 1

    def _forget_waiter(self, waiter: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    # -- connections ----------------------------------------------------------------------------

    def take_idle(self) -> Connection | None:
        """The idle connection parked last that is still usable, closing expired ones."""
        idle = self._idle
        if not idle:
            return None
        if self._expiry is not None:
            expired = self.loop.time() - self._expiry
            while idle and idle[0].idle_since < expired:
                idle.popleft().abort()
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.abort()
        return None

    def put_idle(self, conn: Connection) -> None:
        """Park ``conn`` after a complete response, for the next request."""
        conn.park(self.loop.time())
        self._idle.append(conn)

    def drop_idle(self, conn: Connection) -> None:
        """Take ``conn`` out of the idle ones and close it (its peer closed it, or sent junk)."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        conn.abort()

    def forget(self, conn: Connection) -> None:
        """``conn``'s socket closed: it no longer counts as open."""
        self._conns.discard(conn)

    async def connect(self, request: httpx.Request, seconds: float | None) -> Connection:
        """Open a new connection (TLS included) within ``seconds``."""
        conn = Connection(self)
        try:
            async with asyncio.timeout(seconds):
                await self.loop.create_connection(
                    lambda: conn,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except TimeoutError as exc:  # our timeout, or the kernel's ETIMEDOUT
            raise httpx.ConnectTimeout("Timed out while connecting.", request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            raise httpx.ConnectError(describe(exc), request=request) from exc
        self._conns.add(conn)
        return conn

    def close(self) -> list[Connection]:
        """Stop parking connections and abort every open one; returns them, to wait on."""
        self.closed = True
        self._idle.clear()
        closing = list(self._conns)
        for conn in closing:
            conn.abort()
        return closing
