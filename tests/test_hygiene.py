"""Secret hygiene and safe defaults: scrubbing, input limits, body logging, exposure refusal."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import respx

from router.errors import RouterError, UpstreamConnectError, UpstreamStatusError
from router.gateway.auth import exposure_problem, is_loopback
from router.redact import REDACTED, ScrubbingFormatter, scrub, scrub_bytes
from router.secrets import Cipher, generate_key, row_context
from router.settings import Settings
from router.store import client_keys
from router.store.backend import database_for
from router.store.credentials import decode_value, encode_value
from router.store.migrations import migrate
from tests.helpers import ADMIN, add_provider, app_client, make_settings

FAKE = "sk-hygiene-0123456789abcdef"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {FAKE}",
        f"{{'authorization': 'Bearer {FAKE}'}}",
        f"headers={{'x-api-key': '{FAKE}'}}",
        f'{{"x-goog-api-key": "{FAKE}"}}',
        f"api-key: {FAKE}",
        f"GET https://generativelanguage.example/v1beta/models?key={FAKE}&alt=sse",
        f"POST http://h/v1/x?alt=sse&key={FAKE}",
        f'{{"apiKey": "{FAKE}"}}',
        f"proxy-authorization=Basic {FAKE}",
        f"token is Bearer {FAKE}",
        # JSON inside a JSON string (an upstream error quoting a request), bytes, raw header lists
        f'{{"error": "{{\\"apiKey\\": \\"{FAKE}\\"}}"}}',
        f'b"x-api-key": b"{FAKE}"',
        f"[(b'x-api-key', b'{FAKE}'), (b'host', b'h')]",
        f"Headers([('x-goog-api-key', '{FAKE}'), ('accept', '*/*')])",
        f'{{"openai-api-key": "{FAKE}"}}',
    ],
)
def test_every_credential_shape_is_scrubbed(text: str) -> None:
    cleaned = scrub(text)
    assert FAKE not in cleaned
    assert REDACTED in cleaned


def test_text_without_credentials_is_left_alone() -> None:
    for text in (
        "All 2 provider(s) for model 'm' failed; last error: HTTP 503",
        "send 'Authorization: Bearer <key>'",
        '{"error": {"code": "invalid_api_key", "param": "api_key"}}',
        '{"error": {"param": "api_key", "message": "m"}}',
    ):
        assert scrub(text) == text


def test_error_messages_are_scrubbed_where_they_are_made() -> None:
    assert FAKE not in RouterError(f"failed at http://h/?key={FAKE}").message
    assert FAKE not in str(UpstreamConnectError(f"ConnectError for url 'http://h/?key={FAKE}'"))
    status = UpstreamStatusError(
        "HTTP 401", status_code=401, body=f'{{"error": "bad x-api-key: {FAKE}"}}'.encode()
    )
    assert FAKE.encode() not in status.body
    clean = UpstreamStatusError("HTTP 500", status_code=500, body=b'{"error": "boom"}')
    assert clean.body == b'{"error": "boom"}'


def test_log_lines_and_tracebacks_are_scrubbed() -> None:
    formatter = ScrubbingFormatter("%(levelname)s %(message)s")
    try:
        raise httpx.ConnectError(f"cannot reach https://h/v1/models?key={FAKE}")
    except httpx.ConnectError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "calling %s", (f"Bearer {FAKE}",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "Traceback" in line and FAKE not in line


# -- input limits ------------------------------------------------------------------------------


@pytest.fixture
def upstream(upstreams: respx.MockRouter) -> respx.Route:
    return upstreams.post("http://upstream.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, json={"choices": [], "model": "m"})
    )


async def test_oversized_headers_get_431_everywhere(tmp_path: Path, upstream: respx.Route) -> None:
    settings = make_settings(tmp_path, max_header_bytes=2048)
    async with app_client(settings) as (_, client):
        await add_provider(client, "up", "http://upstream.test/v1", ["m"])
        big = {"x-padding": "a" * 3000}
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for response in (
            await client.post("/v1/chat/completions", json=chat, headers=big),
            await client.get("/v1/providers", headers={**ADMIN, **big}),
        ):
            assert response.status_code == 431
            assert response.json()["error"]["code"] == "headers_too_large"
        assert upstream.call_count == 0
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200


async def test_too_many_messages_and_too_deep_json_get_400(
    tmp_path: Path, upstream: respx.Route
) -> None:
    settings = make_settings(tmp_path, max_messages=3, max_json_depth=8)
    async with app_client(settings) as (_, client):
        await add_provider(client, "up", "http://upstream.test/v1", ["m"])
        message = {"role": "user", "content": "hi"}
        many = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [message] * 4}
        )
        assert many.status_code == 400
        assert many.json()["error"]["code"] == "too_many_messages"
        assert many.json()["error"]["param"] == "messages"
        nested: object = "x"
        for _ in range(10):
            nested = {"a": nested}
        deep = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [message], "metadata": nested}
        )
        assert deep.status_code == 400 and deep.json()["error"]["code"] == "json_too_deep"
        assert upstream.call_count == 0
        ok = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [message] * 3}
        )
        assert ok.status_code == 200


async def test_bodies_are_not_logged_unless_asked_and_then_cut_and_scrubbed(
    tmp_path: Path, upstream: respx.Route, caplog: pytest.LogCaptureFixture
) -> None:
    chat = {
        "model": "m",
        "messages": [{"role": "user", "content": f"my key is Bearer {FAKE} " + "z" * 500}],
    }
    answer = {"role": "assistant", "content": f"echo x-api-key: {FAKE} " + "y" * 500}
    replied = httpx.Response(200, json={"model": "m", "choices": [{"index": 0, "message": answer}]})
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {"content": f"Bearer {FAKE}"}}]}
    streamed = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    for log_bodies in (False, True):
        settings = make_settings(
            tmp_path / str(log_bodies), log_bodies=log_bodies, log_body_max_bytes=200
        )
        caplog.clear()
        upstream.mock(return_value=replied)
        with caplog.at_level(logging.INFO, logger="provider_router.bodies"):
            async with app_client(settings) as (_, client):
                await add_provider(client, "up", "http://upstream.test/v1", ["m"])
                assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
                upstream.mock(
                    return_value=httpx.Response(
                        200, content=streamed, headers={"content-type": "text/event-stream"}
                    )
                )
                stream = await client.post("/v1/chat/completions", json={**chat, "stream": True})
                assert stream.status_code == 200 and b"[DONE]" in stream.content
        logged = [r.getMessage() for r in caplog.records if r.name == "provider_router.bodies"]
        if not log_bodies:
            assert logged == []
            continue
        request, response, _, streamed_response = logged
        assert request.startswith("Request ") and "(truncated)" in request
        assert "my key is Bearer" in request and "z" * 300 not in request
        assert response.startswith("Response ") and "(truncated)" in response
        assert "echo x-api-key" in response and "y" * 300 not in response
        assert streamed_response.startswith("Response ")
        assert "Bearer [redacted]" in streamed_response and "[DONE]" in streamed_response
        assert all(FAKE not in line for line in logged)


# -- refusing to serve an open proxy on the network --------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.5.0.1", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_exposure_is_a_problem_only_while_nobody_needs_a_key(tmp_path: Path) -> None:
    base = make_settings(tmp_path, host="0.0.0.0")
    migrate(base.database_path)
    db = database_for(base)
    await db.open()
    try:
        problem = await exposure_problem(base, db)
        assert problem is not None
        assert "keys create" in problem and "require_client_keys" in problem
        assert "127.0.0.1" in problem and "PROVIDER_ROUTER_ALLOW_OPEN_PROXY" in problem
        for fixed in (
            make_settings(tmp_path, host="127.0.0.1"),
            make_settings(tmp_path, host="0.0.0.0", require_client_keys=True),
            make_settings(tmp_path, host="0.0.0.0", allow_open_proxy=True),
        ):
            assert await exposure_problem(fixed, db) is None
        await client_keys.create_key(db, {"name": "first"})
        assert await exposure_problem(base, db) is None
    finally:
        await db.close()


def test_serve_on_a_public_address_without_keys_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--host", "0.0.0.0", "--port", "9",
         "--database", f"sqlite:///{tmp_path / 'router.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "Refusing to listen on 0.0.0.0" in result.stderr
    assert "keys create" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_parse_the_security_switches(tmp_path: Path) -> None:
    from router.settings import SettingsError, load_settings

    env = {"PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS": "true", "PROVIDER_ROUTER_ALLOW_OPEN_PROXY": "0"}
    settings = load_settings(environ=env)
    assert settings.require_client_keys is True and settings.allow_open_proxy is False
    with pytest.raises(SettingsError, match="PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS"):
        load_settings(environ={"PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS": "maybe"})
    config = tmp_path / "c.toml"
    config.write_text("[auth]\nrequire_client_keys = 1\n")
    with pytest.raises(SettingsError, match=r"auth\.require_client_keys"):
        load_settings(str(config), environ={})
    assert Settings().require_client_keys is False


async def test_oversized_headers_get_431_over_a_real_socket(tmp_path: Path) -> None:
    from router.app import create_app
    from tests.helpers import serve_asgi

    async with serve_asgi(create_app(make_settings(tmp_path))) as url, httpx.AsyncClient() as http:
        small = await http.get(f"{url}/health", headers={"x-pad": "a" * 20_000})
        big = await http.get(f"{url}/health", headers={"x-pad": "a" * 40_000})
    assert small.status_code == 200
    assert big.status_code == 431
    assert "limits.max_header_bytes" in big.json()["error"]["message"]


@pytest.mark.parametrize(
    ("value", "limit", "over"),
    [
        ({"a": [[1]]}, 3, False),
        ({"a": [[1]]}, 2, True),
        ([{"a": "[[[[{{{{"}], 2, False),
        ({"a": 1, "b": {"c": [1, 2, {"d": {}}]}}, 5, False),
        ({"a": 1, "b": {"c": [1, 2, {"d": {}}]}}, 4, True),
    ],
)
def test_json_depth(value: object, limit: int, over: bool) -> None:
    from router.gateway.limits import json_depth_over

    assert json_depth_over(value, limit) is over


def test_a_credential_the_process_decrypted_or_stored_is_scrubbed_in_any_shape() -> None:
    cipher = Cipher(generate_key())
    decrypted = "sk-echo-decrypted-" + secrets.token_hex(8)
    stored = "sk-echo-stored-" + secrets.token_hex(8)
    short = "dummy-" + secrets.token_hex(2)  # 10 characters: a placeholder, left alone
    for value in (decrypted, stored, short):
        text = f"Incorrect API key provided: {value}."
        assert scrub(text) == text  # a shape no pattern knows
    context = row_context("p", "apiKey")
    token = orjson.dumps(cipher.encrypt(orjson.dumps(decrypted).decode(), context)).decode()
    assert decode_value(cipher, "p", "apiKey", token) == decrypted
    encode_value(cipher, "p", "apiKey", stored, True)
    encode_value(cipher, "p", "headers", {"x-custom": short}, True)
    for value in (decrypted, stored):
        cleaned = scrub(f"Incorrect API key provided: {value}.")
        assert value not in cleaned and REDACTED in cleaned
        assert value.encode() not in scrub_bytes(f'{{"error": "bad key {value}"}}'.encode())
    assert short in scrub(f"Incorrect API key provided: {short}.")


async def test_an_upstream_error_echoing_the_key_does_not_reach_the_client(
    tmp_path: Path, upstreams: respx.MockRouter
) -> None:
    echoed = "sk-echoed-" + secrets.token_hex(12)
    upstreams.post("http://echo.test/v1/chat/completions").respond(
        401, json={"error": {"message": f"Incorrect API key provided: {echoed}.", "type": "x"}}
    )
    settings = make_settings(tmp_path)
    async with app_client(settings) as (app, client):
        await add_provider(client, "echo", "http://echo.test/v1", ["m"], config={"apiKey": echoed})
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        response = await client.post("/v1/chat/completions", json=body)
        # The provider's rejected key is its own fault: a 502 naming it, the echo scrubbed.
        assert response.status_code == 502
        assert echoed not in response.text and "Incorrect API key provided" in response.text
        assert app.services is not None
        await app.services.recorder.flush()
        history = await client.get("/v1/requests", headers=ADMIN)
        [row] = history.json()["data"]
        detail = await client.get(f"/v1/requests/{row['id']}", headers=ADMIN)
        assert row["status_code"] == 502 and echoed not in detail.text
        assert detail.json()["attempt_details"][0]["status_code"] == 401
