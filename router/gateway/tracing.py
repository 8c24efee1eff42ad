"""OpenTelemetry traces: one span per client request, one child span per upstream attempt.

Optional: the OpenTelemetry SDK comes with ``pip install 'provider-router[otel]'``. Tracing is on
when ``tracing.enabled`` is true or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; spans go to that OTLP endpoint over
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` by default, or ``grpc``), and the exporter's
other ``OTEL_*`` variables (headers, timeout, certificates, ``OTEL_SERVICE_NAME``) apply as the
SDK defines them.

Spans are made when a request has finished, from its record: the request path carries no span
objects and no context, and with tracing off pays one ``is None`` test. A request span ends when
its record is done and lasts its measured latency; attempt spans start at their recorded
wall-clock millisecond, kept inside the request span. A client's W3C ``traceparent`` makes the
request span its child. Attributes follow the GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``); attempt spans add their
``provider_router.attempt.outcome`` and ``http.response.status_code``. No prompt or answer text
is in a span unless ``tracing.capture_content`` is on; then the request body and the answer's
first ``logging.body_max_bytes`` bytes are, scrubbed of credentials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from router.gateway.metrics import attempt_outcome
from router.gateway.recorder import RequestRecord
from router.redact import scrub
from router.settings import Settings, SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

log = logging.getLogger("provider_router.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
OPERATIONS = {
    "chat.completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "embeddings": "embeddings",
}
# gen_ai.provider.name's well-known values, by adapter type (the rest are their own names).
PROVIDER_NAMES = {"gemini": "gcp.gemini"}
_MS = 1_000_000  # nanoseconds


def wanted(settings: Settings, environ: Mapping[str, str]) -> bool:
    """Whether tracing is asked for: ``tracing.enabled``, or an OTLP endpoint in the
    environment (unless ``OTEL_SDK_DISABLED`` or ``OTEL_TRACES_EXPORTER=none`` says no)."""
    if settings.tracing_enabled:
        return True
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def otlp_provider(environ: Mapping[str, str]) -> TracerProvider:
    """A tracer provider that batches spans to the OTLP endpoint the environment names.

    Raises ImportError when the ``otel`` extra is not installed."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        exporter = HTTPSpanExporter()
    else:
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not supported for traces; "
            "use 'http/protobuf' or 'grpc'."
        )
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "provider-router"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Tracing:
    """Turns finished request records into spans on ``provider``'s tracer."""

    def __init__(
        self,
        provider: Any,
        *,
        capture_content: bool = False,
        content_max_bytes: int = 4096,
        owned: bool = False,
    ) -> None:
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("provider_router")
        self.capture_content = capture_content
        self.content_max_bytes = content_max_bytes
        self._owned = owned
        self._propagator = TraceContextTextMapPropagator()
        self._empty = Context
        self._in_context = set_span_in_context
        self._kinds = (SpanKind.SERVER, SpanKind.CLIENT)
        self._error = (Status, StatusCode.ERROR)

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str], provider: Any = None
    ) -> Tracing | None:
        """Tracing as the settings and environment ask, on ``provider`` if given (an
        embedding application's own tracer provider, or a test's in-memory one).

        ``tracing.enabled`` without the ``otel`` extra is a :class:`SettingsError`; an OTLP
        endpoint in the environment without it is a warning (the variable may be meant for
        another program)."""
        if provider is None and not wanted(settings, environ):
            return None
        try:
            owned = provider is None
            if provider is None:
                provider = otlp_provider(environ)
            return cls(
                provider,
                capture_content=settings.tracing_capture_content,
                content_max_bytes=settings.log_body_max_bytes,
                owned=owned,
            )
        except ImportError as exc:
            message = (
                "Tracing needs the OpenTelemetry SDK, which is not installed ("
                f"{exc.name or exc}); install it with: pip install 'provider-router[otel]'"
            )
            if settings.tracing_enabled:
                raise SettingsError(f"Setting 'tracing.enabled' is true, but {message}.") from None
            log.warning("%s; serving without traces.", message)
            return None

    def shutdown(self) -> None:
        """Send the spans still batched and stop the exporter (only a provider made here)."""
        if self._owned:
            self.provider.shutdown()

    def parent(self, headers: Iterable[tuple[bytes, bytes]]) -> Any:
        """The context of the client's ``traceparent`` (and ``tracestate``), or an empty one."""
        carrier = {}
        for name, value in headers:
            if name in (b"traceparent", b"tracestate"):
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        if not carrier:
            return self._empty()
        return self._propagator.extract(carrier, context=self._empty())

    def export(self, record: RequestRecord, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Make the spans of a finished request."""
        server, client = self._kinds
        operation = OPERATIONS.get(record.endpoint, record.endpoint)
        candidates = {c.provider_id: c for c in record.order or ()}
        final = candidates.get(record.provider_id or "")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "provider_router.request.id": record.id,
            "provider_router.endpoint": record.endpoint,
            "provider_router.stream": record.stream,
            "provider_router.attempts": len(record.attempts),
            "http.response.status_code": record.status_code,
        }
        if record.model is not None:
            attributes["gen_ai.request.model"] = record.model
        if record.provider_id is not None:
            attributes["provider_router.provider.id"] = record.provider_id
        if final is not None:
            attributes["gen_ai.provider.name"] = _provider_name(final.adapter.type)
        if record.upstream_model is not None:
            attributes["gen_ai.response.model"] = record.upstream_model
        if record.prompt_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = record.prompt_tokens
        if record.completion_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = record.completion_tokens
        if record.ttft_ms is not None:
            attributes["provider_router.time_to_first_token_ms"] = round(record.ttft_ms, 3)
        if record.content is not None:
            for key, body in zip(
                ("gen_ai.input.messages", "gen_ai.output.messages"), record.content, strict=False
            ):
                attributes[key] = scrub(body.decode("utf-8", "replace"))
        # The record's clock is the request's perf_counter latency, ending about now; the
        # attempts' wall-clock starts are whole milliseconds, kept inside the request's span.
        end = time.time_ns()
        start = end - int(record.latency_ms * _MS)
        name = f"{operation} {record.model}" if record.model else operation
        span = self.tracer.start_span(
            name, self.parent(headers), kind=server, attributes=attributes, start_time=start
        )
        if record.status != "success":
            status, error = self._error
            span.set_attribute("error.type", _error_type(record.status, record.status_code))
            span.set_status(status(error, record.error))
        parent = self._in_context(span)
        for attempt in record.attempts:
            candidate = candidates.get(attempt.provider_id)
            outcome = attempt_outcome(attempt.status, attempt.status_code)
            child: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "provider_router.provider.id": attempt.provider_id,
                "provider_router.attempt.n": attempt.n,
                "provider_router.attempt.outcome": outcome,
            }
            if attempt.status_code is not None:
                child["http.response.status_code"] = attempt.status_code
            if candidate is not None:
                child["gen_ai.provider.name"] = _provider_name(candidate.adapter.type)
                child["gen_ai.request.model"] = candidate.upstream_model
            began = min(max(attempt.started_at * _MS, start), end)
            attempt_span = self.tracer.start_span(
                f"{operation} {candidate.upstream_model if candidate else attempt.provider_id}",
                parent, kind=client, attributes=child, start_time=began,
            )  # fmt: skip
            if outcome != "ok":
                status, error = self._error
                attempt_span.set_attribute("error.type", outcome)
                attempt_span.set_status(status(error, attempt.error))
            attempt_span.end(end_time=min(began + int(attempt.latency_ms * _MS), end))
        span.end(end_time=end)


def _provider_name(adapter_type: str) -> str:
    return PROVIDER_NAMES.get(adapter_type, adapter_type)


def _error_type(status: str, status_code: int) -> str:
    if status == "client_closed":
        return "client_closed"
    return str(status_code)
