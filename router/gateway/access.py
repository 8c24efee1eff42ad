"""The access log: one line per proxied request (``logging.access_log``, on by default).

Logged at INFO on ``provider_router.access``, after the answer went out. The text line reads::

    access chat.completions model=gpt-4o provider=openai-main status=200 outcome=ok
    latency_ms=412.3 ttft_ms=88.1 tokens=12+40 attempts=2 request_id=req_...

and in JSON logs (``logging.format = "json"``) each of those is a field of its own, with
``"event": "access"``. Nothing from the request's or the answer's body is in it, and the client
key appears by id (never the key itself).
"""

from __future__ import annotations

import logging

from router.gateway.recorder import RequestRecord

access_log = logging.getLogger("provider_router.access")

OUTCOMES = {"success": "ok", "error": "error", "client_disconnected": "client_closed"}


def _printable(text: str) -> str:
    # The model is the client's text: a line break in it must not forge a second log line.
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def log_access(record: RequestRecord) -> None:
    """Log ``record``'s access line (when INFO is enabled for the access logger)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    outcome = OUTCOMES.get(record.status, record.status)
    latency = round(record.latency_ms, 1)
    ttft = None if record.ttft_ms is None else round(record.ttft_ms, 1)
    # makeRecord + handle rather than info(): the same record and handlers, without the
    # stack walk that finds the caller's file and line (the same line every time).
    line = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "access %s model=%s provider=%s status=%d outcome=%s latency_ms=%.1f ttft_ms=%s"
        " tokens=%s+%s attempts=%d request_id=%s",
        (
            record.endpoint,
            _printable(record.model or "-"),
            record.provider_id or "-",
            record.status_code,
            outcome,
            latency,
            "-" if ttft is None else ttft,
            "-" if record.prompt_tokens is None else record.prompt_tokens,
            "-" if record.completion_tokens is None else record.completion_tokens,
            len(record.attempts),
            record.id,
        ),
        None,
        extra={
            "event": "access",
            "request_id": record.id,
            "endpoint": record.endpoint,
            "model": record.model,
            "provider": record.provider_id,
            "status": record.status_code,
            "outcome": outcome,
            "stream": record.stream,
            "latency_ms": latency,
            "ttft_ms": ttft,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "attempts": len(record.attempts),
            "client_key_id": record.client_key_id,
            "error": record.error,
        },
    )
    access_log.handle(line)
