"""What the fake upstream does (:class:`MockOptions`) and records (:class:`ReceivedRequest`).

``MockOptions.fail`` picks one failure mode: ``status:<code>`` (an error answer; a 429 carries
``Retry-After: retry_after_s`` unless that option is null), ``hang`` (no answer at all until the
client leaves), ``stall`` (a stream that sends half its chunks, then nothing), ``disconnect``
(the connection drops: before the answer, or mid-stream), ``truncate`` (a stream without its
end, or half a JSON body) and ``error_event`` (streams only: the Anthropic fake sends half its
deltas, then an ``overloaded_error`` event; the other dialects have no such event and
truncate). :class:`router.mock.faults.Faults` injects them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

SIMPLE_FAILS = frozenset({"none", "hang", "stall", "disconnect", "truncate", "error_event"})
# The kinds whose stream stops half-way (stall then waits; disconnect drops the connection).
CUT_SHORT = frozenset({"disconnect", "truncate", "error_event"})


def is_number(value: object, *, low: float = 0.0, high: float = math.inf) -> bool:
    """True for a finite int or float in ``[low, high]`` (a JSON ``true`` is not 1)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def parse_fail(fail: object) -> tuple[str, int]:
    """Split a failure mode into (kind, status); raise ValueError if unknown."""
    if isinstance(fail, str):
        if fail in SIMPLE_FAILS:
            return fail, 0
        kind, _, code = fail.partition(":")
        if kind == "status" and code.isdigit() and 400 <= int(code) <= 599:
            return "status", int(code)
    raise ValueError(
        "fail must be none, hang, stall, disconnect, truncate, error_event or status:<400-599>, "
        f"not {fail!r}"
    )


TOOL_CALL_MODES = ("on-request", "always")


@dataclass
class MockOptions:
    """Behaviour of the fake upstream; validated on construction."""

    latency_ms: float = 0
    chunks: int = 5
    chunk_delay_ms: float = 0
    fail: str = "none"
    fail_rate: float = 1.0
    # Prepended to the requested model in answers, like providers that report a
    # resolved name ("gpt-4o" -> "gpt-4o-2024-08-06").
    model_prefix: str = ""
    api_key: str | None = None
    # The Retry-After a fail=status:429 answer carries, in seconds; null sends none.
    retry_after_s: float | None = 1
    # When a chat request with tools gets a tool call (OpenAI format): "on-request" (the magic
    # word, or a tool_choice of "required" or one function), or "always" (the first tool, on
    # every user turn; tool results still get text so an agent's loop ends).
    tool_calls: str = "on-request"

    def __post_init__(self) -> None:
        for name in ("latency_ms", "chunk_delay_ms"):
            if not is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number >= 0")
        if type(self.chunks) is not int or self.chunks < 1:
            raise ValueError("chunks must be an integer >= 1")
        if not is_number(self.fail_rate, high=1.0):
            raise ValueError("fail_rate must be a number between 0 and 1")
        parse_fail(self.fail)
        if not isinstance(self.model_prefix, str):
            raise ValueError("model_prefix must be a string")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError("api_key must be a string or null")
        if self.retry_after_s is not None and not is_number(self.retry_after_s):
            raise ValueError("retry_after_s must be a finite number >= 0 or null")
        if self.tool_calls not in TOOL_CALL_MODES:
            raise ValueError(f"tool_calls must be on-request or always, not {self.tool_calls!r}")


OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(MockOptions))


@dataclass
class ReceivedRequest:
    """One request the fake received (control endpoints and /health excluded)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any  # parsed body, or None when absent or not JSON
