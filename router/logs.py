"""Log output: text for people, JSON lines for log pipelines; credentials scrubbed from both.

``logging.format = "json"`` writes one object per line::

    {"time": "2026-12-05T07:01:02.345Z", "level": "INFO", "logger": "provider_router.access",
     "message": "chat.completions gpt-4o ok ...", "request_id": "req_...", "event": "access",
     "endpoint": "chat.completions", "model": "gpt-4o", "status": 200, ...}

``request_id`` is the request being served when the line was logged (the gateway sets
:data:`request_id_var` for each request), or the ``request_id`` a call passed in ``extra``; the
other fields a call passes in ``extra`` (the event's fields) follow. A traceback goes into
``exception``. Every line, text or JSON, passes through :func:`router.redact.scrub`.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

from router.redact import ScrubbingFormatter, scrub

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id_var: ContextVar[str | None] = ContextVar("provider_router_request_id", default=None)

# What every LogRecord has; anything else on a record came from ``extra`` (the event's fields).
_STANDARD = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"}
)


class TextFormatter(ScrubbingFormatter):
    """The text lines: ``time level logger: message``, scrubbed of credentials.

    The date and time are formatted once per second, not once per line (the access log writes
    a line per request)."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        seconds = int(record.created)
        cached = self._second  # one tuple, read and replaced whole: safe across threads
        if cached[0] != seconds:
            cached = self._second = (seconds, time.strftime(_TEXT_TIME, self.converter(seconds)))
        return f"{cached[1]},{int(record.msecs):03d}"


_TEXT_TIME = "%Y-%m-%d %H:%M:%S"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, scrubbed of credentials."""

    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        cached = self._second
        if cached[0] != seconds:
            cached = self._second = (seconds, time.strftime(_JSON_TIME, time.gmtime(seconds)))
        line: dict[str, Any] = {
            "time": f"{cached[1]}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return scrub(orjson.dumps(line, default=str).decode())


_JSON_TIME = "%Y-%m-%dT%H:%M:%S"


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``logging.format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter(TEXT_FORMAT)


def configure(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) in
    ``log_format``, replacing the handlers it had. Returns the handler."""
    # No format here shows the thread or process, and finding their names costs every record
    # (an access line per request) a few microseconds.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
