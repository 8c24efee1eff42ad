"""Jinja filters: how the UI writes times, durations, numbers and money."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def when(ms: int | None) -> str:
    """A Unix-ms timestamp as UTC text (the page says UTC once)."""
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(time.time() - ms / 1000, 0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


FILTERS: dict[str, Callable[..., Any]] = {
    "when": when,
    "ago": ago,
    "duration": duration,
    "number": number,
    "money": money,
    "percent": percent,
}
