"""UpstreamClient: what reaches the upstream, cookies, respx interception, error translation."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.http import (
    UpstreamClient,
    http_config_problems,
    retry_after_seconds,
    status_error,
    translate_httpx_error,
)
from router.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from tests.helpers import free_port, serve_asgi
from tests.transport.servers import Receive, Send, echo_app, lifespan, read_body

TIMEOUT = httpx.Timeout(5.0)


async def cookie_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Set a cookie on every answer and report the Cookie header the request carried."""
    if await lifespan(scope, receive, send):
        return
    await read_body(receive)
    sent = dict(scope["headers"]).get(b"cookie", b"").decode()
    body = orjson.dumps({"cookie": sent})
    headers = [
        (b"content-type", b"application/json"),
        (b"set-cookie", b"session=abc; Path=/"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_sends_base_url_path_fixed_headers_and_body() -> None:
    async with serve_asgi(echo_app) as url:
        headers = {"Authorization": "Bearer k", "X-Extra": "é"}
        client = UpstreamClient(url + "/v1/", headers, TIMEOUT)
        try:
            response = await client.post("/chat/completions", b'{"a":1}')
        finally:
            await client.aclose()
    seen = response.json()
    assert response.status_code == 200
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"] == '{"a":1}'
    headers = dict(seen["headers"])
    assert headers["authorization"] == "Bearer k"
    assert headers["x-extra"] == "é"
    assert headers["content-length"] == "7"
    assert headers["host"] == url.removeprefix("http://")
    assert response.request.url == httpx.URL(url + "/v1/chat/completions")


async def test_get_has_no_body_and_no_content_length() -> None:
    async with serve_asgi(echo_app) as url:
        client = UpstreamClient(url, {}, TIMEOUT)
        try:
            response = await client.get("/models")
        finally:
            await client.aclose()
    seen = response.json()
    assert seen["path"] == "/models"
    assert seen["body"] == ""
    assert "content-length" not in dict(seen["headers"])


async def test_cookies_from_one_answer_never_follow_the_next_request() -> None:
    async with serve_asgi(cookie_app) as url:
        client = UpstreamClient(url, {}, TIMEOUT)
        try:
            first = await client.post("/x", b"{}")
            second = await client.post("/x", b"{}")
        finally:
            await client.aclose()
    assert first.headers["set-cookie"].startswith("session=")
    assert first.json() == {"cookie": ""}
    assert second.json() == {"cookie": ""}


async def test_streamed_response_is_read_as_it_arrives_and_closed_by_the_caller() -> None:
    async with serve_asgi(echo_app) as url:
        client = UpstreamClient(url, {}, TIMEOUT)
        try:
            response = await client.post("/s", b"hello", stream=True)
            assert not response.is_closed
            body = b"".join([part async for part in response.aiter_bytes()])
            await response.aclose()
        finally:
            await client.aclose()
    assert orjson.loads(body)["body"] == "hello"


async def test_respx_routes_see_requests_of_the_lean_path() -> None:
    with respx.mock(assert_all_called=True, using="httpx") as mock:
        route = mock.post("http://upstream.test/v1/chat").respond(200, json={"ok": True})
        client = UpstreamClient("http://upstream.test/v1", {"Authorization": "Bearer k"}, TIMEOUT)
        try:
            response = await client.post("/chat", b'{"q":1}')
        finally:
            await client.aclose()
    assert response.json() == {"ok": True}
    sent = route.calls.last.request
    assert sent.content == b'{"q":1}'
    assert sent.headers["authorization"] == "Bearer k"


async def test_refused_connection_translates_to_connect_error_without_the_url() -> None:
    port = free_port()
    client = UpstreamClient(f"http://127.0.0.1:{port}", {"Authorization": "Bearer s3"}, TIMEOUT)
    try:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post("/x", b"{}")
    finally:
        await client.aclose()
    error = translate_httpx_error("p1", caught.value)
    assert isinstance(error, UpstreamConnectError)
    assert str(port) not in str(error) and "s3" not in str(error)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectTimeout("t"), UpstreamConnectError),
        (httpx.ReadTimeout("t"), UpstreamTimeout),
        (httpx.RemoteProtocolError("peer closed"), UpstreamProtocolError),
    ],
)
def test_translate_httpx_error_kinds(exc: httpx.HTTPError, kind: type[Exception]) -> None:
    assert isinstance(translate_httpx_error("p1", exc), kind)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"error": {"message": "slow down"}}', "slow down"),
        (b'{"error": "plain"}', "plain"),
        (b"<html>oops</html>", "<html>oops</html>"),
    ],
)
def test_status_error_reads_the_reason_and_retry_after(body: bytes, reason: str) -> None:
    response = httpx.Response(429, headers={"retry-after": "7"})
    error = status_error("p1", response, body)
    assert error.status_code == 429
    assert error.retry_after == 7.0
    assert str(error) == f"Provider 'p1' answered HTTP 429: {reason}"


async def test_openai_adapter_lists_the_upstream_models_and_refuses_a_broken_list() -> None:
    from providers.base import AdapterOptions
    from providers.openai import OpenAIAdapter

    adapter = OpenAIAdapter("p1", {"baseURL": "http://upstream.test/v1"}, AdapterOptions())
    try:
        with respx.mock(using="httpx") as mock:
            route = mock.get("http://upstream.test/v1/models")
            route.respond(200, json={"object": "list", "data": [{"id": "a"}, {"id": "b"}]})
            assert await adapter.list_models() == ["a", "b"]
            route.respond(200, json={"data": "nope"})
            with pytest.raises(UpstreamProtocolError):
                await adapter.list_models()
    finally:
        await adapter.aclose()


async def test_embeddings_and_model_list_default_to_unsupported() -> None:
    from providers.base import Adapter, AdapterOptions, ChatStream, Reply
    from router.errors import UpstreamUnsupported

    class ChatOnly(Adapter):
        type = "chat-only"

        async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
            raise AssertionError

        async def chat_stream(
            self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
        ) -> ChatStream:
            raise AssertionError

    adapter = ChatOnly("p1", {}, AdapterOptions())
    with pytest.raises(UpstreamUnsupported, match="does not serve embeddings"):
        await adapter.embeddings({}, "m")
    with pytest.raises(UpstreamUnsupported, match="cannot list its models"):
        await adapter.list_models()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("12", 12.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("inf", None), ("nan", None)],
)
def test_retry_after_takes_seconds_and_refuses_nonsense(header: str, seconds: float | None) -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after": header})) == seconds


def test_retry_after_takes_an_http_date() -> None:
    # RFC 9110 allows Retry-After as an HTTP-date; some upstreams and proxies send that form.
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    found = retry_after_seconds(httpx.Response(503, headers={"retry-after": when}))
    assert found is not None and 115 <= found <= 121
    past = email.utils.formatdate(time.time() - 120, usegmt=True)
    assert retry_after_seconds(httpx.Response(503, headers={"retry-after": past})) == 0.0


@pytest.mark.parametrize(
    "base_url",
    [
        "https://llm.example/v1?key=AIzaFAKE",
        "https://llm.example/v1?api-version=1&API_KEY=x",
        "https://llm.example/v1?access_token=x",
        "https://llm.example/v1?sig=x",
    ],
)
def test_a_credential_in_the_base_url_query_is_refused(base_url: str) -> None:
    (problem,) = http_config_problems({"baseURL": base_url})
    assert "must not carry a credential" in problem
    assert "AIzaFAKE" not in problem


def test_an_ordinary_query_in_the_base_url_is_kept() -> None:
    assert http_config_problems({"baseURL": "https://x.openai.azure.com/v1?api-version=2024"}) == []
