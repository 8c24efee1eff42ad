"""Server-drawn SVG charts: bar geometry for a series, computed here, drawn by the templates.

Charts never carry meaning by colour alone: errors are drawn hatched as well as darker, every bar
has a ``<title>`` with its numbers, and each chart sits beside a table of the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.ui.formatting import when

WIDTH = 600
HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    height: float
    error_height: float
    label: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: float
    first: str
    last: str
    width: int = WIDTH
    height: int = HEIGHT


def request_bars(buckets: list[int], series: list[dict[str, Any]]) -> Chart:
    """Requests per bucket as bars, the erroring share of each bar hatched."""
    peak = max((s["requests"] for s in series), default=0)
    slot = WIDTH / max(len(series), 1)
    bars = []
    for i, (start, s) in enumerate(zip(buckets, series, strict=True)):
        height = HEIGHT * s["requests"] / peak if peak else 0.0
        errors = HEIGHT * s["errors"] / peak if peak else 0.0
        bars.append(
            Bar(
                x=round(i * slot, 2),
                width=round(max(slot - 1, 0.5), 2),
                height=round(height, 2),
                error_height=round(errors, 2),
                label=f"{when(start)} UTC: {s['requests']} requests, {s['errors']} errors",
            )
        )
    return Chart(
        bars, peak, when(buckets[0]) if buckets else "", when(buckets[-1]) if buckets else ""
    )


def latency_bars(buckets: list[int], series: list[dict[str, Any]]) -> Chart:
    """p95 latency per bucket as bars (p50 in the title beside it)."""
    values = [s["p95_latency_ms"] or 0.0 for s in series]
    peak = max(values, default=0.0)
    slot = WIDTH / max(len(series), 1)
    bars = [
        Bar(
            x=round(i * slot, 2),
            width=round(max(slot - 1, 0.5), 2),
            height=round(HEIGHT * v / peak, 2) if peak else 0.0,
            error_height=0.0,
            label=f"{when(start)} UTC: p50 {s['p50_latency_ms']} ms, p95 {s['p95_latency_ms']} ms",
        )
        for i, (start, s, v) in enumerate(zip(buckets, series, values, strict=True))
    ]
    return Chart(
        bars, peak, when(buckets[0]) if buckets else "", when(buckets[-1]) if buckets else ""
    )
