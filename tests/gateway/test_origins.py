"""Web pages cannot drive the gateway (issue 16.4): Origin, Host and content type, over real
sockets against an open gateway (no client key) on loopback, as a browser would reach it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import create_app
from router.mock.upstream import MockUpstream
from router.server import cleartext_warning, host_warning
from router.settings import Settings
from tests.helpers import ADMIN, add_provider, free_port, make_settings, serve_asgi, start
from tests.transport.servers import Certificates

CHAT = orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
MESSAGES = orjson.dumps(
    {"model": "gpt-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
)
JSON = {"content-type": "application/json"}


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, MockUpstream, str]]:
    """An open gateway on a real socket, only loopback names allowed unless ``settings`` say."""
    upstream = MockUpstream()
    app = create_app(make_settings(tmp_path, **{"allowed_hosts": (), **settings}))
    async with (
        serve_asgi(upstream.app()) as fake,
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        await add_provider(client, "mock", f"{fake}/v1", ["gpt-test"])
        yield client, upstream, url


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], set(error)) == (code, {"message", "type", "param", "code"})


@pytest.mark.parametrize(
    ("content_type", "origin", "status", "code"),
    [
        # The cross-site "simple" requests of the issue: refused whatever their body says.
        ("text/plain", "http://evil.example", 403, "origin_not_allowed"),
        ("application/x-www-form-urlencoded", "http://evil.example", 403, "origin_not_allowed"),
        ("application/json", "http://evil.example", 403, "origin_not_allowed"),
        ("text/plain", "null", 403, "origin_not_allowed"),
        # Without an Origin (a program), a body not declared JSON is still refused.
        ("text/plain", None, 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", None, 415, "unsupported_media_type"),
        ("multipart/form-data; boundary=x", None, 415, "unsupported_media_type"),
        (None, None, 415, "unsupported_media_type"),
    ],
)
async def test_a_web_page_cannot_run_a_chat_on_an_open_gateway(
    tmp_path: Path, content_type: str | None, origin: str | None, status: int, code: str
) -> None:
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if origin is not None:
        headers["origin"] = origin
    async with gateway(tmp_path) as (client, upstream, _):
        answer = await client.post("/v1/chat/completions", content=CHAT, headers=headers)
        fine = await client.post("/v1/chat/completions", content=CHAT, headers=JSON)
    assert_refused(answer, status, code)
    assert fine.status_code == 200
    # Only the JSON request without an Origin reached (and was billed by) the upstream.
    assert len(upstream.requests) == 1


async def test_json_variants_are_accepted(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, _, _url):
        for content_type in ("application/json; charset=utf-8", "Application/JSON"):
            answer = await client.post(
                "/v1/chat/completions", content=CHAT, headers={"content-type": content_type}
            )
            assert answer.status_code == 200, (content_type, answer.text)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "10.0.0.7", "127.0.0.1.evil.example"]
)
async def test_an_open_gateway_refuses_foreign_host_names(tmp_path: Path, host: str) -> None:
    async with gateway(tmp_path) as (client, upstream, _):
        answer = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "host": host}
        )
        models = await client.get("/v1/models", headers={"host": host})
    assert_refused(answer, 403, "host_not_allowed")
    assert_refused(models, 403, "host_not_allowed")
    assert upstream.requests == []


@pytest.mark.parametrize("host", ["localhost", "localhost:9", "127.0.0.1", "127.1.2.3:80",
                                  "[::1]:8080", "app.localhost"])  # fmt: skip
async def test_loopback_host_names_are_accepted(tmp_path: Path, host: str) -> None:
    async with gateway(tmp_path) as (client, _, _url):
        answer = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "host": host}
        )
    assert answer.status_code == 200, answer.text


async def test_allowed_hosts_widen_the_names_and_a_client_key_lifts_the_rule(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, allowed_hosts=("gw.internal",)) as (client, _, _url):
        named = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "host": "gw.internal:8080"}
        )
        other = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "host": "evil.example"}
        )
        created = await client.post("/v1/keys", json={"name": "k"}, headers=ADMIN)
        key = {"authorization": f"Bearer {created.json()['key']}"}
        # Once keys are required, a rebinding page has nothing to spend: any name is fine.
        keyed = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, **key, "host": "evil.example"}
        )
    assert named.status_code == 200
    assert_refused(other, 403, "host_not_allowed")
    assert keyed.status_code == 200, keyed.text


async def test_errors_on_the_messages_door_come_in_anthropics_shape(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, _, _url):
        answer = await client.post(
            "/v1/messages", content=MESSAGES, headers={"content-type": "text/plain"}
        )
    assert answer.status_code == 415
    assert answer.json()["type"] == "error"
    assert "application/json" in answer.json()["error"]["message"]


async def test_management_writes_need_json_too(tmp_path: Path) -> None:
    body = orjson.dumps({"id": "x", "name": "x", "type": "openai",
                         "config": {"baseURL": "http://127.0.0.1:9/v1"}})  # fmt: skip
    async with gateway(tmp_path) as (client, _, _url):
        form = await client.post(
            "/v1/providers", content=body, headers={**ADMIN, "content-type": "text/plain"}
        )
        listed = (await client.get("/v1/providers", headers=ADMIN)).json()["data"]
        # A write without a body (an action) needs no content type.
        reset = await client.post("/v1/providers/mock/reset", headers=ADMIN)
    assert_refused(form, 415, "unsupported_media_type")
    assert [p["id"] for p in listed] == ["mock"]
    assert reset.status_code == 200, reset.text


async def test_listed_cors_origins_get_preflights_and_cors_headers(tmp_path: Path) -> None:
    app_origin = "https://app.example"
    async with gateway(tmp_path, cors_origins=(app_origin,)) as (client, upstream, _):
        preflight = await client.options(
            "/v1/chat/completions",
            headers={"origin": app_origin, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization, content-type"},
        )  # fmt: skip
        answer = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "origin": app_origin}
        )
        other = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "origin": "https://x.example"}
        )
        other_preflight = await client.options(
            "/v1/chat/completions",
            headers={"origin": "https://x.example", "access-control-request-method": "POST"},
        )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == app_origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == app_origin
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    assert "origin" in answer.headers["vary"].lower()
    assert_refused(other, 403, "origin_not_allowed")
    assert_refused(other_preflight, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in other_preflight.headers
    assert len(upstream.requests) == 1


async def test_the_gateways_own_origin_is_allowed(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, _, url):
        answer = await client.post(
            "/v1/chat/completions", content=CHAT, headers={**JSON, "origin": url}
        )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_plain_http_off_loopback_is_warned_about() -> None:
    warning = cleartext_warning(Settings(host="0.0.0.0"))
    assert warning is not None and "server.tls_cert" in warning and "in clear" in warning
    assert cleartext_warning(Settings(host="127.0.0.1")) is None
    assert cleartext_warning(Settings(host="0.0.0.0", tls_cert="c", tls_key="k")) is None
    behind_proxy = Settings(host="0.0.0.0", allow_open_proxy=True)
    assert "server.allowed_hosts" in (host_warning(behind_proxy) or "")
    assert (
        host_warning(Settings(host="0.0.0.0", allow_open_proxy=True, allowed_hosts=("*",))) is None
    )


async def test_serve_speaks_https_with_tls_cert_and_key(
    tmp_path: Path, certificates: Certificates
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\ntls_cert = "{certificates.server_cert}"\n'
        f'tls_key = "{certificates.server_key}"\n'
    )
    port = free_port()
    server = start("serve", "--config", str(config), "--port", str(port),
                   "--database", f"sqlite:///{tmp_path / 'router.db'}", cwd=tmp_path)  # fmt: skip
    context = ssl.create_default_context(cafile=str(certificates.ca))
    try:
        async with httpx.AsyncClient(verify=context, timeout=5) as client:
            health = None
            for _ in range(200):
                try:
                    health = await client.get(f"https://127.0.0.1:{port}/health")
                    break
                except httpx.TransportError:
                    if server.poll() is not None:
                        break
                    await asyncio.sleep(0.05)
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{port}/health")
    finally:
        server.terminate()
        server.wait(20)
    output = server.stdout.read().decode() if server.stdout else ""
    if server.stdout:
        server.stdout.close()
    assert health is not None and health.status_code == 200, output
    assert f"listening on https://127.0.0.1:{port}" in output


def test_a_tls_key_without_a_certificate_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\ntls_key = "key.pem"\n')
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "server.tls_cert" in result.stderr and "Traceback" not in result.stderr
