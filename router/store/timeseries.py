"""Time-bucketed usage from request history: ``GET /v1/stats/timeseries`` and the UI overview.

SQL groups the time range's requests by (group, latency bin), by (bucket, group) and by
(bucket, latency bin), returning counts and sums; Python folds those few rows into totals, per-group
totals and series. Latency percentiles are read off logarithmic bins (:data:`BINS_PER_DOUBLING`
per doubling, so a bin is about 4% wide), which merge across groups and buckets without another
scan; they are therefore approximate, within one bin, unlike ``GET /v1/stats``'s exact rank.

The scan reads the covering index ``requests_timeseries`` (schema/0008), never table rows, so its
time grows with the requests inside the window. Windows longer than :data:`ROLLUP_SPAN_MS` (the
overview's week and month), and any window reaching back before the pruned history, are read from
the hourly roll-up instead (:mod:`router.store.rollup`): whole hours from ``usage_hourly``, the
partial hours at the ends from ``requests``, so counts, tokens and cost stay exact while the time
no longer grows with the traffic. There the percentiles come from the roll-up's fixed latency
buckets (coarser than the bins above), and an hour is counted in the time bucket where it starts.
Measured with ``python -m bench.stats --overview`` (bench/README.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest
from router.store import rollup
from router.store.db import Database, Row
from router.store.history import parse_time
from router.store.stats import GROUPS, group_by_param

BINS_PER_DOUBLING = 16
MAX_BUCKETS = 1000
DEFAULT_BUCKETS = 60
DEFAULT_RANGE_MS = 24 * 3600 * 1000
# Longer windows are read from the hourly roll-up (the overview's day window stays on raw rows).
ROLLUP_SPAN_MS = 2 * 24 * 3600 * 1000

_SELECT = """
SELECT {keys},
       COUNT(*) AS requests,
       CAST(SUM(CASE WHEN status = 'success' THEN 0 ELSE 1 END) AS BIGINT) AS errors,
       CAST(coalesce(SUM(total_tokens), 0) AS BIGINT) AS tokens,
       coalesce(SUM(cost), 0.0) AS cost
FROM requests {hint}
WHERE created_at >= :since AND created_at < :until
GROUP BY {groups}
"""
_BUCKET = "(created_at - :since) / :bucket AS b"


def _bin(db: Database) -> str:
    return f"{db.log2_bin('latency_ms + 1', BINS_PER_DOUBLING)} AS bin"


def bin_latency(index: int) -> float:
    """The upper edge of latency bin ``index`` in milliseconds."""
    return round(2 ** ((index + 1) / BINS_PER_DOUBLING) - 1, 3)


def percentile(histogram: Mapping[int, int], percent: int) -> float | None:
    """The nearest-rank ``percent``th percentile of a latency histogram (bin -> count)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(math.ceil(total * percent / 100), 1)
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bin_latency(index)
    return bin_latency(max(histogram))  # unreachable: seen reaches total


class _Totals:
    __slots__ = ("cost", "errors", "fixed", "histogram", "requests", "tokens")

    def __init__(self, *, fixed: bool = False) -> None:
        self.requests = 0
        self.errors = 0
        self.tokens = 0
        self.cost = 0.0
        self.histogram: dict[int, int] = {}
        self.fixed = fixed  # the histogram holds the roll-up's fixed buckets, not log bins

    def add(self, row: Row) -> None:
        self.requests += row["requests"]
        self.errors += row["errors"]
        self.tokens += row["tokens"]
        self.cost += row["cost"]
        if "bin" in row.keys() and row["bin"] is not None:  # noqa: SIM118 - Row: `in` is values
            self.histogram[row["bin"]] = self.histogram.get(row["bin"], 0) + row["requests"]

    def add_counts(self, row: Row) -> None:
        """A :func:`rollup.sums_sql` row."""
        self.requests += row["requests"]
        self.errors += row["errors"]
        self.tokens += row["tokens"]
        self.cost += row["cost"]

    def add_histogram(self, histogram: list[int]) -> None:
        """The bucket counts of a :func:`rollup.latency_sql` row."""
        for index, count in enumerate(histogram):
            if count:
                self.histogram[index] = self.histogram.get(index, 0) + count

    def as_dict(self, *, percentiles: bool = True) -> dict[str, Any]:
        found: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "total_tokens": self.tokens,
            "cost": round(self.cost, 6),
        }
        if percentiles:
            of = rollup.bucket_percentile if self.fixed else percentile
            found["p50_latency_ms"] = of(self.histogram, 50)
            found["p95_latency_ms"] = of(self.histogram, 95)
        return found


def parse_window(params: Mapping[str, str], now_ms: int | None = None) -> tuple[int, int, int]:
    """``(since, until, bucket_ms)`` from the query; defaults: the last 24 hours in 60 buckets."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    until = parse_time(params, "until", now)
    since = parse_time(params, "since", max(until - DEFAULT_RANGE_MS, 0))
    if until <= since:
        raise InvalidRequest("Parameter 'until' must be after 'since'.", param="until")
    span = until - since
    raw = params.get("bucket_ms")
    if raw is None:
        bucket = max(math.ceil(span / DEFAULT_BUCKETS), 1000)
    elif not (raw.isascii() and raw.isdigit() and len(raw) <= 16) or int(raw) < 1000:
        raise InvalidRequest(
            f"Parameter 'bucket_ms' must be an integer of at least 1000, got {raw!r}.",
            param="bucket_ms",
        )
    else:
        bucket = int(raw)
    if math.ceil(span / bucket) > MAX_BUCKETS:
        raise InvalidRequest(
            f"Parameter 'bucket_ms' = {bucket} makes {math.ceil(span / bucket)} buckets between "
            f"'since' and 'until'; at most {MAX_BUCKETS} are allowed.",
            param="bucket_ms",
        )
    return since, until, bucket


def _query(db: Database, *keys: str) -> str:
    return _SELECT.format(
        keys=", ".join(keys),
        groups=", ".join(k.split()[-1] for k in keys),
        hint=db.index_hint("requests_timeseries"),
    )


async def group_totals(
    db: Database, group_by: str, since: int, until: int
) -> tuple[_Totals, dict[Any, _Totals]]:
    """Overall totals and totals per group (with latency percentiles): one scan."""
    rows = await db.execute(
        _query(db, f"{GROUPS[group_by]} AS grp", _bin(db)), {"since": since, "until": until}
    )
    overall = _Totals()
    groups: dict[Any, _Totals] = {}
    for row in rows:
        overall.add(row)
        found = groups.get(row["grp"])
        if found is None:
            found = groups[row["grp"]] = _Totals()
        found.add(row)
    return overall, groups


async def use_rollup(db: Database, since: int, until: int) -> bool:
    """Whether the window is read from the roll-up: long, or reaching into pruned history."""
    return until - since > ROLLUP_SPAN_MS or since < await rollup.pruned_before(db)


async def rolled_up(
    db: Database, group_by: str, since: int, until: int, bucket: int
) -> tuple[_Totals, dict[Any, _Totals], list[_Totals], dict[Any, list[_Totals]]]:
    """Totals, per-group totals, the overall series and each group's series, from the
    roll-up's whole hours and the raw rows of the partial hours at the ends: three queries
    (counts, latency histograms, the ends)."""
    count = math.ceil((until - since) / bucket)
    column = GROUPS[group_by]
    window = {**rollup.split(since, until), "bucket": bucket}
    overall = _Totals(fixed=True)
    groups: dict[Any, _Totals] = {}
    overall_series = [_Totals(fixed=True) for _ in range(count)]
    series: dict[Any, list[_Totals]] = {}

    def places(row: Row) -> tuple[_Totals, ...]:
        key = row["grp"]
        found = groups.get(key)
        if found is None:
            found = groups[key] = _Totals(fixed=True)
            series[key] = [_Totals(fixed=True) for _ in range(count)]
        return overall, found, overall_series[row["b"]], series[key][row["b"]]

    for row in await db.execute(rollup.sums_sql(column, bucket=True), window):
        for totals in places(row):
            totals.add_counts(row)
    for row in await db.execute(rollup.latency_sql(column, bucket=True), window):
        histogram = list(rollup.histogram_of(row))
        for totals in places(row)[:3]:  # a group's per-bucket entries carry no percentiles
            totals.add_histogram(histogram)
    for row in await db.execute(rollup.edges_sql(column, bucket=True), window):
        for totals in places(row):
            totals.add(row)
    return overall, groups, overall_series, series


def _check(params: Mapping[str, str]) -> str:
    return group_by_param(params, ("since", "until", "bucket_ms", "group_by"))


async def totals(
    db: Database, params: Mapping[str, str], *, now_ms: int | None = None
) -> list[dict[str, Any]]:
    """Per group over the window, without series (what the overview's second table needs)."""
    group_by = _check(params)
    since, until, bucket = parse_window(params, now_ms)
    if await use_rollup(db, since, until):
        _, groups, _, _ = await rolled_up(db, group_by, since, until, bucket)
    else:
        _, groups = await group_totals(db, group_by, since, until)
    data = [{group_by: key, **t.as_dict()} for key, t in groups.items()]
    data.sort(key=lambda e: (-e["requests"], str(e[group_by])))
    return data


async def timeseries(
    db: Database, params: Mapping[str, str], *, now_ms: int | None = None
) -> dict[str, Any]:
    """Requests, errors, latency percentiles, tokens and cost per time bucket and group.

    Returns ``{"group_by", "since", "until", "bucket_ms", "buckets": [start ms...], "totals",
    "series": [per bucket], "groups": [{<group>, totals..., "series": [per bucket]}]}``. Every
    series has one entry per bucket, empty ones included. Latency percentiles are given for the
    totals, per group over the window and per bucket overall; a group's per-bucket entries carry
    counts, tokens and cost only (percentiles there would multiply the rows a scan returns).
    Three scans of the window's index range, or two queries when read from the roll-up.
    """
    group_by = _check(params)
    since, until, bucket = parse_window(params, now_ms)
    count = math.ceil((until - since) / bucket)
    window = {"since": since, "until": until, "bucket": bucket}
    if await use_rollup(db, since, until):
        overall, groups, overall_series, series = await rolled_up(
            db, group_by, since, until, bucket
        )
    else:
        overall, groups = await group_totals(db, group_by, since, until)
        series = {key: [_Totals() for _ in range(count)] for key in groups}
        overall_series = [_Totals() for _ in range(count)]
        for row in await db.execute(_query(db, _BUCKET, f"{GROUPS[group_by]} AS grp"), window):
            series[row["grp"]][row["b"]].add(row)
        for row in await db.execute(_query(db, _BUCKET, _bin(db)), window):
            overall_series[row["b"]].add(row)
    data = [
        {
            group_by: key,
            **t.as_dict(),
            "series": [s.as_dict(percentiles=False) for s in series[key]],
        }
        for key, t in groups.items()
    ]
    data.sort(key=lambda e: (-e["requests"], str(e[group_by])))
    return {
        "group_by": group_by,
        "since": since,
        "until": until,
        "bucket_ms": bucket,
        "buckets": [since + i * bucket for i in range(count)],
        "totals": overall.as_dict(),
        "series": [s.as_dict() for s in overall_series],
        "groups": data,
    }
