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
import time
from typing import Any

from router.gateway.recorder import RequestRecord

access_log = logging.getLogger("provider_router.access")

OUTCOMES = {"success": "ok", "error": "error", "client_closed": "client_closed"}
_STARTED_NS = time.time_ns()


class AccessRecord(logging.LogRecord):
    """The log record of one access line, made without :class:`logging.LogRecord`'s own
    constructor.

    That constructor derives the caller's file and module names with ``os.path`` calls and
    looks up the thread and process, and ``extra`` fields are then checked one by one: about
    half of an access line's cost (callgrind: some 60,000 instructions of 120,000) for values
    that are the same on every line. This sets every attribute a handler or formatter reads,
    directly; ``relativeCreated`` counts from when this module was imported.
    """

    def __init__(self, message: str, fields: dict[str, Any]) -> None:
        now = time.time_ns()
        self.__dict__.update(fields)
        self.name = access_log.name
        self.msg = message
        self.args = None
        self.levelname = "INFO"
        self.levelno = logging.INFO
        self.pathname = __file__
        self.filename = "access.py"
        self.module = "access"
        self.exc_info = None
        self.exc_text = None
        self.stack_info = None
        self.lineno = 0
        self.funcName = "log_access"
        self.created = now / 1e9
        self.msecs = (now % 1_000_000_000) // 1_000_000 + 0.0
        self.relativeCreated = (now - _STARTED_NS) / 1e6
        self.thread = self.threadName = self.processName = self.process = None
        self.taskName = None


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
    prompt, completion = record.prompt_tokens, record.completion_tokens
    # Formatted here, with no arguments left for the handler: a '%' in a model name stays text.
    message = (
        f"access {record.endpoint} model={_printable(record.model or '-')}"
        f" provider={record.provider_id or '-'} status={record.status_code} outcome={outcome}"
        f" latency_ms={latency} ttft_ms={'-' if ttft is None else ttft}"
        f" tokens={'-' if prompt is None else prompt}+{'-' if completion is None else completion}"
        f" attempts={len(record.attempts)} request_id={record.id}"
    )
    fields = {
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
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "attempts": len(record.attempts),
        "client_key_id": record.client_key_id,
        "error": record.error,
    }
    access_log.handle(AccessRecord(message, fields))
