"""Which transport a provider gets, and what it reaches through: TLS trust, client
certificates, CONNECT proxies (configured or from the environment) and HTTP/2, over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.base import AdapterOptions
from providers.http import UpstreamClient, client_from_config, translate_httpx_error
from router.errors import UpstreamConnectError
from router.transport.egress import Egress, proxy_for
from tests.helpers import free_port
from tests.transport.servers import (
    Certificates,
    ConnectProxy,
    RawServer,
    echo_app,
    keep_alive,
)


@contextlib.asynccontextmanager
async def provider_client(url: str, **config: Any) -> AsyncIterator[UpstreamClient]:
    """The client a provider with ``config`` (and ``baseURL`` ``url``) talks through."""
    client = client_from_config({"baseURL": url, **config}, AdapterOptions(), url, {})
    try:
        yield client
    finally:
        await client.aclose()


# -- TLS: caBundle and clientCert ----------------------------------------------------------------


@pytest.mark.parametrize("http2", [False, True], ids=["own", "httpx"])
async def test_self_signed_upstream_needs_its_ca_bundle(
    certificates: Certificates, http2: bool
) -> None:
    async with RawServer(keep_alive, certificates.server_context()) as server:
        async with provider_client(server.url, http2=http2) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.post("/", b"x")
        error = translate_httpx_error("internal", caught.value)
        assert isinstance(error, UpstreamConnectError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)
        assert str(error).startswith("Provider 'internal': could not connect")
        async with provider_client(
            server.url, caBundle=str(certificates.ca), http2=http2
        ) as client:
            assert client.transport_kind == ("httpx" if http2 else "own")
            answers = [await client.post("/", b"x") for _ in range(2)]
    assert [a.content for a in answers] == [b"ok", b"ok"]


@pytest.mark.parametrize("http2", [False, True], ids=["own", "httpx"])
async def test_client_certificate_is_presented_when_the_upstream_demands_one(
    certificates: Certificates, http2: bool
) -> None:
    demanding = certificates.server_context(require_client_cert=True)
    async with RawServer(keep_alive, demanding) as server:
        trusted = {"caBundle": str(certificates.ca), "http2": http2}
        async with provider_client(server.url, **trusted) as client:
            # TLS 1.3 reports the refusal after the handshake: on connect or on the first read.
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await client.post("/", b"x")
        async with provider_client(
            server.url, clientCert=str(certificates.client), **trusted
        ) as client:
            answer = await client.post("/", b"x")
    assert answer.content == b"ok"


# -- proxies -----------------------------------------------------------------------------------


async def test_configured_proxy_carries_the_request_through_a_tunnel(
    certificates: Certificates,
) -> None:
    async with (
        RawServer(keep_alive, certificates.server_context()) as server,
        ConnectProxy() as proxy,
        provider_client(server.url, proxy=proxy.url, caBundle=str(certificates.ca)) as client,
    ):
        assert client.transport_kind == "httpx"
        answers = [await client.post("/", b"x") for _ in range(3)]
    assert [a.content for a in answers] == [b"ok"] * 3
    assert proxy.tunnels == [server.url.removeprefix("https://")]  # one tunnel, kept alive
    assert server.connections == 1


async def test_https_proxy_from_the_environment_is_used(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        RawServer(keep_alive, certificates.server_context()) as server,
        ConnectProxy() as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        async with provider_client(server.url, caBundle=str(certificates.ca)) as client:
            assert client.transport_kind == "httpx"
            answer = await client.post("/", b"x")
    assert answer.content == b"ok"
    assert proxy.tunnels == [server.url.removeprefix("https://")]


@pytest.mark.parametrize(
    ("no_proxy", "config"),
    [("127.0.0.1", {}), ("", {"proxy": ""}), ("", {"proxy": False})],
    ids=["NO_PROXY", "proxy-empty", "proxy-false"],
)
async def test_no_proxy_and_an_empty_proxy_go_direct(
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    config: dict[str, Any],
) -> None:
    async with (
        RawServer(keep_alive, certificates.server_context()) as server,
        ConnectProxy() as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        async with provider_client(server.url, caBundle=str(certificates.ca), **config) as client:
            assert client.transport_kind == "own"
            answer = await client.post("/", b"x")
    assert answer.content == b"ok"
    assert proxy.tunnels == []
    assert server.connections == 1


def test_proxy_for_reads_the_scheme_s_variable_then_all_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://tls-proxy:3128")
    monkeypatch.setenv("ALL_PROXY", "every-proxy:8080")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal")
    assert proxy_for("https://api.example.com/v1", None) == "http://tls-proxy:3128"
    assert proxy_for("http://api.example.com/v1", None) == "http://every-proxy:8080"
    assert proxy_for("https://llm.internal:8443/v1", None) is None
    assert proxy_for("http://localhost:11434", None) is None
    assert proxy_for("https://api.example.com", "http://mine:1") == "http://mine:1"
    assert proxy_for("https://api.example.com", "") is None
    assert Egress().proxy is None  # unset: the environment decides


# -- HTTP/2 ------------------------------------------------------------------------------------


async def test_http2_upstream_is_spoken_to_in_http2(certificates: Certificates) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile = str(certificates.server_cert)
    config.keyfile = str(certificates.server_key)
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(echo_app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    url = f"https://127.0.0.1:{port}"
    try:
        async with provider_client(url, caBundle=str(certificates.ca), http2=True) as client:
            assert client.transport_kind == "httpx"
            for _ in range(200):  # until hypercorn listens
                try:
                    answer = await client.post("/v1/chat", b'{"a":1}')
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            else:
                raise AssertionError("hypercorn did not start")
            second = await client.post("/v1/chat", b'{"b":2}')
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
    assert answer.http_version == "HTTP/2"
    assert answer.json()["body"] == '{"a":1}'
    assert answer.json()["path"] == "/v1/chat"
    assert second.http_version == "HTTP/2"
