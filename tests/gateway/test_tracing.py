"""OpenTelemetry: a span per request, a child per attempt, GenAI attributes, the client's
traceparent honoured, no content unless asked; spans read back from the SDK's in-memory
exporter."""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router import server
from router.app import ProviderRouterApp, create_app
from router.gateway import tracing
from router.gateway.tracing import Tracing
from router.mock.upstream import MockOptions, MockUpstream
from router.settings import Settings, SettingsError
from tests.helpers import add_provider, eventually, make_settings, serve_asgi

PROMPT = "the secret plan is pancakes"
CHAT = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@contextlib.asynccontextmanager
async def traced(
    settings: Settings,
) -> AsyncIterator[tuple[ProviderRouterApp, httpx.AsyncClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, tracer_provider=provider)
    async with _lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            yield app, client, exporter
    provider.shutdown()


@contextlib.asynccontextmanager
async def _lifespan(app: ProviderRouterApp) -> AsyncIterator[None]:
    async with app.starlette.router.lifespan_context(app.starlette):
        yield


def by_kind(spans: tuple[ReadableSpan, ...]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time
                     or 0)  # fmt: skip
    return server, clients


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_fallback_makes_one_request_span_and_a_child_per_attempt(tmp_path: Path) -> None:
    bad, good = MockUpstream(MockOptions(fail="status:503")), MockUpstream(MockOptions())
    async with (
        serve_asgi(bad.app()) as bad_url,
        serve_asgi(good.app()) as good_url,
        traced(make_settings(tmp_path)) as (_, client, exporter),
    ):
        await add_provider(client, "bad", f"{bad_url}/v1", ["m"], priority=2)
        await add_provider(client, "good", f"{good_url}/v1", ["m"], priority=1)
        exporter.clear()
        response = await client.post("/v1/chat/completions", json=CHAT)
        spans = exporter.get_finished_spans()

    assert response.status_code == 200
    server, (first, second) = by_kind(spans)
    assert len(spans) == 3
    assert server.name == "chat m"
    a = attrs(server)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "m"
    assert a["gen_ai.response.model"] == "m"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["provider_router.provider.id"] == "good"
    assert a["provider_router.request.id"] == response.headers["x-request-id"]
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["provider_router.attempts"] == 2
    assert server.status.status_code == StatusCode.UNSET
    assert server.parent is None  # no traceparent: a root span
    for child in (first, second):
        assert child.parent is not None
        assert child.parent.span_id == server.context.span_id
        assert child.context.trace_id == server.context.trace_id
        assert server.start_time is not None and child.start_time is not None
        assert server.end_time is not None and child.end_time is not None
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert attrs(first)["provider_router.provider.id"] == "bad"
    assert attrs(first)["provider_router.attempt.outcome"] == "error"
    assert attrs(first)["http.response.status_code"] == 503
    assert first.status.status_code == StatusCode.ERROR
    assert attrs(first)["error.type"] == "error"
    assert attrs(second)["provider_router.attempt.outcome"] == "ok"
    assert attrs(second)["http.response.status_code"] == 200
    assert attrs(second)["gen_ai.provider.name"] == "openai"
    # Content stays out unless tracing.capture_content is on.
    for span in spans:
        assert PROMPT not in str(attrs(span))
        assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & set(attrs(span))


async def test_the_clients_traceparent_is_the_parent(tmp_path: Path) -> None:
    async with traced(make_settings(tmp_path)) as (_, client, exporter):
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        (span,) = exporter.get_finished_spans()
    assert response.status_code == 404
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.status.status_code == StatusCode.ERROR
    assert attrs(span)["error.type"] == "404"
    assert attrs(span)["http.response.status_code"] == 404


async def test_a_broken_traceparent_starts_a_new_trace(tmp_path: Path) -> None:
    async with traced(make_settings(tmp_path)) as (_, client, exporter):
        headers = {"traceparent": "00-not-a-trace-id-01"}
        await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        (span,) = exporter.get_finished_spans()
    assert span.parent is None


async def test_capture_content_puts_the_bodies_in_the_request_span(tmp_path: Path) -> None:
    fake = MockUpstream(MockOptions())
    settings = make_settings(tmp_path, tracing_capture_content=True)
    async with serve_asgi(fake.app()) as url, traced(settings) as (_, client, exporter):
        await add_provider(client, "p", f"{url}/v1", ["m"])
        exporter.clear()
        plain = await client.post("/v1/chat/completions", json=CHAT)
        streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        spans = exporter.get_finished_spans()
    assert plain.status_code == streamed.status_code == 200
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 2
    for span in servers:
        a = attrs(span)
        assert PROMPT in a["gen_ai.input.messages"]
        assert "mock" in a["gen_ai.output.messages"]
    assert "data:" in attrs(servers[1])["gen_ai.output.messages"]
    assert attrs(servers[1])["provider_router.stream"] is True


async def test_a_streamed_client_disconnect_is_an_error_span(tmp_path: Path) -> None:
    slow = MockUpstream(MockOptions(chunks=200, chunk_delay_ms=50))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(make_settings(tmp_path), tracer_provider=provider)
    async with (
        serve_asgi(slow.app()) as slow_url,
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        await add_provider(client, "slow", f"{slow_url}/v1", ["m"])
        exporter.clear()
        body = {**CHAT, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if "content" in line:
                    break
        spans = await eventually(lambda: exporter.get_finished_spans(), "the spans were made")
    provider.shutdown()
    server, (attempt,) = by_kind(spans)
    assert attrs(server)["error.type"] == "client_closed"
    assert attrs(attempt)["provider_router.attempt.outcome"] == "client_closed"
    assert attrs(server)["provider_router.time_to_first_token_ms"] > 0


def test_tracing_is_off_unless_asked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert Tracing.from_settings(settings, {}) is None
    assert tracing.wanted(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted(settings, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"})
    assert not tracing.wanted(
        settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.wanted(
        settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracing.wanted(make_settings(tmp_path, tracing_enabled=True), {})


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_otlp_exporter_follows_the_protocol_variable(protocol: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    provider = tracing.otlp_provider(environ)
    try:
        (processor,) = provider._active_span_processor._span_processors
        exporter = processor.span_exporter  # type: ignore[attr-defined]
        assert ("grpc" in type(exporter).__module__) == (protocol == "grpc")
        assert provider.resource.attributes["service.name"] == "provider-router"
    finally:
        provider.shutdown()


def test_an_unknown_otlp_protocol_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match=r"http/json.*'http/protobuf' or 'grpc'"):
        tracing.otlp_provider({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


@pytest.fixture
def without_opentelemetry_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of the SDK fail, as when the ``otel`` extra is not installed."""
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.usefixtures("without_opentelemetry_sdk")
def test_tracing_enabled_without_the_extra_stops_start_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tracing_enabled=True)
    with pytest.raises(SettingsError, match=r"pip install 'provider-router\[otel\]'"):
        Tracing.from_settings(settings, {})


@pytest.mark.usefixtures("without_opentelemetry_sdk")
def test_an_otlp_endpoint_without_the_extra_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="provider_router.tracing")
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert Tracing.from_settings(make_settings(tmp_path), environ) is None
    assert "provider-router[otel]" in caplog.text and "without traces" in caplog.text


def test_serve_refuses_tracing_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert server.installed("opentelemetry.sdk")
    assert not server.installed("no_such_package.sdk")
    monkeypatch.setattr(server, "installed", lambda module: False)
    with pytest.raises(SettingsError, match=r"tracing.enabled.*provider-router\[otel\]"):
        server.check_tracing(make_settings(tmp_path, tracing_enabled=True))
    server.check_tracing(make_settings(tmp_path))  # off: nothing to check
