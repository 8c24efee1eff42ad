"""UpstreamTransport over real sockets: uvicorn for proper upstreams, raw servers for the rest.

Every async test runs once on asyncio's own event loop and once on uvloop (conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import select
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from router.transport import UpstreamTransport
from router.transport.connection import Connection
from router.transport.pool import OriginPool
from tests.helpers import free_port, serve_asgi
from tests.transport.servers import (
    Certificates,
    RawServer,
    Receive,
    Send,
    closed_by_peer,
    echo_app,
    keep_alive,
    lifespan,
    read_body,
    read_request,
    response,
)

SECRET = "sk-secret-never-in-messages"


class BlindPoll:
    """A ``select.poll`` that never reports anything: a close the kernel has not signalled."""

    def register(self, fd: int, mask: int) -> None:
        pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return []


@contextlib.asynccontextmanager
async def client_for(
    url: str, transport: UpstreamTransport | None = None, **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    transport = transport or UpstreamTransport()
    async with httpx.AsyncClient(transport=transport, base_url=url, **kwargs) as client:
        yield client


def pool_of(transport: UpstreamTransport) -> OriginPool:
    (pool,) = transport.pools()
    return pool


# -- bodies and framing ------------------------------------------------------------------------


async def test_json_post_is_echoed_with_content_length() -> None:
    async with serve_asgi(echo_app) as url, client_for(url) as client:
        sent = {"model": "m", "messages": [{"role": "user", "content": "héllo"}]}
        answer = await client.post("/v1/chat?x=1", json=sent, headers={"authorization": SECRET})
    assert answer.status_code == 200
    assert answer.http_version == "HTTP/1.1"
    assert answer.reason_phrase == "OK"
    assert answer.headers["content-length"] == str(len(answer.content))
    echoed = answer.json()
    assert orjson.loads(echoed["body"]) == sent
    assert (echoed["path"], echoed["query"]) == ("/v1/chat", "x=1")
    names = [name.lower() for name, _ in echoed["headers"]]
    assert names.count("host") == 1
    assert names.count("content-length") == 1
    assert dict(echoed["headers"])["authorization"] == SECRET


async def test_streaming_request_body_is_sent_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"", b"two,", b"three"):
            yield part

    async with serve_asgi(echo_app) as url, client_for(url) as client:
        answer = await client.post("/", content=parts())
    echoed = answer.json()
    assert echoed["body"] == "one,two,three"
    assert ["transfer-encoding", "chunked"] in [[k.lower(), v] for k, v in echoed["headers"]]


async def test_chunked_body_chunks_arrive_as_sent() -> None:
    # The app sends chunk n+1 only once the client has read chunk n: a transport that held
    # body bytes back (until the end, or until more arrive) would never get past chunk 1.
    seen = [asyncio.Event() for _ in range(3)]

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for number, event in enumerate(seen, 1):
            chunk = b"data: %d\n\n" % number
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await event.wait()
        await send({"type": "http.response.body", "body": b""})

    async with (
        serve_asgi(app) as url,
        client_for(url) as client,
        client.stream("POST", "/", content=b"{}") as answer,
    ):
        assert answer.headers["transfer-encoding"] == "chunked"
        chunks = answer.aiter_raw()
        received = []
        for event in seen:
            received.append(await asyncio.wait_for(anext(chunks), 10))
            event.set()
        rest = [chunk async for chunk in chunks]
    assert received == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
    assert rest == []


async def test_close_delimited_body_ends_at_eof_and_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"second part")
        await writer.drain()

    async with RawServer(handler) as server, client_for(server.url) as client:
        one = await client.get("/")
        two = await client.get("/")
    assert one.content == two.content == b"first part, second part"
    assert server.connections == 2


async def test_gzip_body_is_decoded_by_httpx() -> None:
    text = b'{"answer": "' + b"compressible " * 200 + b'"}'
    packed = gzip.compress(text)

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        await read_body(receive)
        headers = [(b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(packed))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": packed})

    async with serve_asgi(app) as url, client_for(url) as client:
        answer = await client.post("/", content=b"{}")
    assert len(packed) < len(text)
    assert answer.content == text


async def test_head_answer_has_no_body_and_the_connection_is_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if request.startswith(b"HEAD "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            else:
                writer.write(response(b"after head"))

    async with RawServer(handler) as server, client_for(server.url) as client:
        head = await client.head("/")
        after = await client.get("/")
    assert head.headers["content-length"] == "1234"
    assert head.content == b""
    assert after.content == b"after head"
    assert server.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"final"))

    async with RawServer(handler) as server, client_for(server.url) as client:
        answers = [await client.post("/", content=b"x") for _ in range(2)]
    assert [(a.status_code, a.content) for a in answers] == [(200, b"final")] * 2
    assert server.connections == 1


async def test_header_with_line_break_is_refused_before_sending() -> None:
    async with RawServer(keep_alive) as server, client_for(server.url) as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get("/", headers={"x-bad": "a\r\nx-injected: 1"})
    assert server.connections == 0


# -- connection reuse and closing ---------------------------------------------------------------


async def test_sequential_requests_share_one_keep_alive_connection() -> None:
    async with RawServer(keep_alive) as server, client_for(server.url) as client:
        for _ in range(5):
            answer = await client.post("/", content=b"hello")
            assert answer.content == b"ok"
    assert server.connections == 1


async def test_closing_a_response_mid_stream_closes_its_socket() -> None:
    server_saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await read_request(reader)
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            writer.write(head + b"9\r\ndata: 1\n\n\r\n")
            await writer.drain()
            if await closed_by_peer(reader):
                server_saw_close.set()
        else:
            await keep_alive(reader, writer)

    async with RawServer(handler) as server, client_for(server.url) as client:
        async with client.stream("GET", "/") as answer:
            async for chunk in answer.aiter_raw():
                assert chunk == b"data: 1\n\n"
                break
        await asyncio.wait_for(server_saw_close.wait(), 5)
        after = await client.get("/")
    assert after.content == b"ok"
    assert server.connections == 2


async def test_idle_connection_closed_by_server_is_not_used() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response())  # no "Connection: close": the client keeps it...
        writer.close()  # ...and the server closes it while idle
        await writer.wait_closed()
        closed.set()

    async with RawServer(handler) as server, client_for(server.url) as client:
        assert (await client.get("/")).content == b"ok"
        # Straight away: the server's FIN is in the kernel, the loop has not reported it yet.
        assert (await client.post("/", content=b"x")).content == b"ok"
        await closed.wait()
        await asyncio.sleep(0.05)  # this time the loop has reported the close
        assert (await client.post("/", content=b"x")).content == b"ok"
    assert server.connections == 3


async def test_write_to_a_reused_connection_found_closed_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race in which the pool hands out a connection whose close it has not noticed yet:
    # the pool neither drops it when the peer closes it nor checks it before reuse.
    dropped = asyncio.Event()
    monkeypatch.setattr(Connection, "usable", lambda self: True)
    monkeypatch.setattr(OriginPool, "drop_idle", lambda self, conn: dropped.set())

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await read_request(reader)
            writer.write(response())  # then closes, the connection idle in the client's pool
        else:
            await keep_alive(reader, writer)

    async with RawServer(handler) as server, client_for(server.url) as client:
        assert (await client.post("/", content=b"one")).content == b"ok"
        await asyncio.wait_for(dropped.wait(), 5)
        assert pool_of(client._transport).idle_count == 1  # type: ignore[arg-type]
        assert (await client.post("/", content=b"two")).content == b"ok"
    assert server.connections == 2


async def test_reused_connection_dropped_after_the_write_retries_only_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server answers once then hangs up; the next request, written before the client saw
    # the close, gets no answer at all. A GET is sent again; a POST is not (it may have run).
    monkeypatch.setattr(select, "poll", BlindPoll)  # the check before reuse sees nothing

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response())

    async with RawServer(handler) as server, client_for(server.url) as client:
        assert (await client.get("/")).content == b"ok"
        assert (await client.get("/")).content == b"ok"
        assert server.connections == 2  # the second GET went out twice
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post("/", content=b"x")
    assert server.connections == 2


async def test_connection_idle_past_keepalive_expiry_is_closed_not_reused() -> None:
    server_saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await keep_alive(reader, writer)
        server_saw_close.set()

    transport = UpstreamTransport(keepalive_expiry=0.3)
    async with RawServer(handler) as server, client_for(server.url, transport) as client:
        assert (await client.get("/")).content == b"ok"
        assert (await client.get("/")).content == b"ok"  # within the expiry: reused
        assert server.connections == 1
        await asyncio.sleep(0.4)
        assert (await client.get("/")).content == b"ok"
        assert server.connections == 2
        await asyncio.wait_for(server_saw_close.wait(), 5)  # the expired one was closed


async def test_aclose_closes_idle_connections() -> None:
    server_saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response())
        if await closed_by_peer(reader):
            server_saw_close.set()

    transport = UpstreamTransport()
    async with RawServer(handler) as server:
        async with client_for(server.url, transport) as client:
            assert (await client.get("/")).content == b"ok"
            assert pool_of(transport).idle_count == 1
            assert not server_saw_close.is_set()
        await asyncio.wait_for(server_saw_close.wait(), 5)  # the client's exit closed it
    assert transport.pools() == []


# -- failures -----------------------------------------------------------------------------------


async def test_connection_refused_is_a_connect_error() -> None:
    port = free_port()  # nothing listens there any more
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get("/", headers={"authorization": SECRET})
    assert "Connection refused" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.request.url.port == port


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs")
async def test_connect_that_hangs_is_a_connect_timeout() -> None:
    # A listener that never accepts, its backlog full: Linux drops further SYNs unanswered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            timeout = httpx.Timeout(5, connect=0.2)
            async with client_for(f"http://127.0.0.1:{port}", timeout=timeout) as client:
                with pytest.raises(httpx.ConnectTimeout):
                    await asyncio.wait_for(client.get("/"), 5)
        finally:
            for filler in fillers:
                filler.close()


async def test_server_that_does_not_read_is_a_write_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)  # the StreamReader stops reading once its buffer is full

    timeout = httpx.Timeout(5, write=0.2)
    async with RawServer(handler) as server, client_for(server.url, timeout=timeout) as client:
        with pytest.raises(httpx.WriteTimeout):
            await asyncio.wait_for(client.post("/", content=b"x" * (64 << 20)), 5)


async def test_connection_reset_mid_body_is_a_read_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: a reset, not a FIN

    async with (
        RawServer(handler) as server,
        client_for(server.url) as client,
        client.stream("GET", "/") as answer,
    ):
        with pytest.raises(httpx.ReadError, match="Connection reset"):
            await answer.aread()


async def test_cancelled_request_closes_its_connection_and_frees_its_slot() -> None:
    request_read = asyncio.Event()
    server_saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await read_request(reader)
            request_read.set()
            if await closed_by_peer(reader):
                server_saw_close.set()
        else:
            await keep_alive(reader, writer)

    transport = UpstreamTransport(max_connections=1)
    async with RawServer(handler) as server, client_for(server.url, transport) as client:
        waiting = asyncio.create_task(client.get("/"))
        await request_read.wait()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(server_saw_close.wait(), 5)
        answer = await client.get("/", timeout=httpx.Timeout(5, pool=1))
    assert answer.content == b"ok"
    assert server.connections == 2


async def test_server_that_never_answers_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await closed_by_peer(reader)

    async with RawServer(handler) as server, client_for(server.url, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await asyncio.wait_for(
                client.post("/", content=b"x", headers={"authorization": SECRET}), 5
            )
    assert SECRET not in str(caught.value)
    assert caught.value.request.method == "POST"


async def test_body_that_stalls_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await closed_by_peer(reader)

    async with (
        RawServer(handler) as server,
        client_for(server.url, timeout=0.2) as client,
        client.stream("GET", "/") as answer,
    ):
        assert answer.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await asyncio.wait_for(answer.aread(), 5)


async def test_server_closing_without_answer_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with RawServer(handler) as server, client_for(server.url) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post("/", content=b"x")
    assert server.connections == 1  # a fresh connection: never retried


MID_BODY = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
]


@pytest.mark.parametrize("answer", MID_BODY, ids=["content-length", "chunked"])
async def test_server_closing_mid_body_is_a_protocol_error(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)

    async with RawServer(handler) as server, client_for(server.url) as client:
        async with client.stream("GET", "/") as streamed:
            assert streamed.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
                await streamed.aread()
        # and through the non-streaming API
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")


async def test_garbage_answer_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await closed_by_peer(reader)

    async with RawServer(handler) as server, client_for(server.url) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="invalid HTTP response"):
            await client.get("/")


# -- limits -------------------------------------------------------------------------------------


async def test_pool_timeout_while_the_only_slot_is_held() -> None:
    transport = UpstreamTransport(max_connections=1)
    timeout = httpx.Timeout(5, pool=0.1)
    async with (
        RawServer(keep_alive) as server,
        client_for(server.url, transport, timeout=timeout) as client,
    ):
        async with client.stream("GET", "/") as held:
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/")
            await held.aread()
        assert (await client.get("/")).content == b"ok"  # the slot came back
    assert server.connections == 1


async def test_waiting_request_gets_the_slot_when_it_frees() -> None:
    transport = UpstreamTransport(max_connections=1)
    async with RawServer(keep_alive) as server, client_for(server.url, transport) as client:
        async with client.stream("GET", "/") as held:
            waiting = asyncio.create_task(client.get("/"))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await held.aread()
        assert (await asyncio.wait_for(waiting, 5)).content == b"ok"
    assert server.connections == 1


async def test_fifty_concurrent_requests_all_get_their_own_answer() -> None:
    transport = UpstreamTransport(max_connections=10)
    async with serve_asgi(echo_app) as url, client_for(url, transport) as client:
        answers = await asyncio.gather(
            *(client.post("/", content=f"request {i}".encode()) for i in range(50))
        )
    assert [a.json()["body"] for a in answers] == [f"request {i}" for i in range(50)]
    ports = {a.json()["client_port"] for a in answers}
    assert 1 < len(ports) <= 10


async def test_unread_body_pauses_reading_from_the_socket() -> None:
    size = 64 << 20
    all_written = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * (1 << 20)
        for _ in range(size >> 20):
            writer.write(block)
            await writer.drain()
        all_written.set()
        await closed_by_peer(reader)

    async with (
        RawServer(handler) as server,
        client_for(server.url) as client,
        client.stream("GET", "/") as answer,
    ):
        chunks = answer.aiter_raw()
        received = len(await anext(chunks))
        await asyncio.sleep(0.3)
        # The client stopped reading: 64 MiB cannot have left the server.
        assert not all_written.is_set()
        async for chunk in chunks:
            received += len(chunk)
    assert received == size
    assert all_written.is_set()


# -- TLS ----------------------------------------------------------------------------------------


async def test_https_with_a_trusted_certificate(certificates: Certificates) -> None:
    client_context = ssl.create_default_context(cafile=str(certificates.ca))
    transport = UpstreamTransport(ssl_context=client_context)
    async with RawServer(keep_alive, certificates.server_context()) as server:
        async with client_for(server.url, transport) as client:
            answers = [await client.post("/", content=b"secret") for _ in range(3)]
        assert [a.content for a in answers] == [b"ok"] * 3
        assert server.connections == 1
        # The default context does not trust the test CA.
        async with client_for(server.url) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get("/")
