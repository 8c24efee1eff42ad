"""Usage statistics from request history, computed in SQL: ``GET /v1/stats`` and ``stats``.

Per provider or per model over a time range: requests, errors, tokens, cost, and the p50/p95
latency (nearest rank: the smallest latency at or above that share of the group's requests).
Measured with ``python -m bench.stats`` (see bench/README.md).

A range that reaches back before the pruned history (``history.retention_days``) is read from
the hourly roll-up instead (:mod:`router.store.rollup`): the counts, tokens and cost stay exact to
the hour, the percentiles become estimates from fixed latency buckets, and the answer says
``"rolled_up": true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest
from router.store import rollup
from router.store.db import Database
from router.store.history import MAX_TIME_MS, parse_time

GROUPS = {"provider": "provider_id", "model": "model"}
# Covering indexes from schema/0002: ordered by group, then latency, so the sums are one index
# scan and each percentile is one ordered walk of its group (no sort of the whole history).
INDEXES = {"provider": "requests_stats_provider", "model": "requests_stats_model"}

SUMS_SQL = """
SELECT {column} AS grp,
       COUNT(*) AS requests,
       CAST(SUM(CASE WHEN status = 'success' THEN 0 ELSE 1 END) AS BIGINT) AS errors,
       CAST(coalesce(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens,
       CAST(coalesce(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens,
       CAST(coalesce(SUM(total_tokens), 0) AS BIGINT) AS total_tokens,
       coalesce(SUM(cost), 0.0) AS cost
FROM requests {hint}
WHERE created_at >= :since AND created_at < :until
GROUP BY {column}
"""
NTH_LATENCY_SQL = """
SELECT latency_ms FROM requests {hint}
WHERE {column} IS NOT DISTINCT FROM :grp AND created_at >= :since AND created_at < :until
ORDER BY latency_ms LIMIT 1 OFFSET :offset
"""


def nearest_rank(count: int, percent: int) -> int:
    """The 0-based position of the ``percent``th percentile among ``count`` sorted values."""
    return max((count * percent + 99) // 100 - 1, 0)


def group_by_param(params: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    """Refuse a query parameter not in ``allowed``; ``group_by`` ('provider' by default)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}.", param=unknown[0])
    group_by = params.get("group_by", "provider")
    if group_by not in GROUPS:
        raise InvalidRequest(
            f"Parameter 'group_by' must be 'provider' or 'model', got {group_by!r}.",
            param="group_by",
        )
    return group_by


async def usage_stats(db: Database, params: Mapping[str, str]) -> dict[str, Any]:
    """``{"group_by", "since", "until", "data": [...]}``; one entry per provider or model."""
    group_by = group_by_param(params, ("since", "until", "group_by"))
    since = parse_time(params, "since", 0)
    until = parse_time(params, "until", MAX_TIME_MS)
    if until < since:
        raise InvalidRequest("Parameter 'until' must not be before 'since'.", param="until")
    column, hint = GROUPS[group_by], db.index_hint(INDEXES[group_by])
    if since < await rollup.pruned_before(db):
        data = await _rolled_up(db, group_by, since, until)
        return {"group_by": group_by, "since": since, "until": until, "rolled_up": True,
                "data": data}  # fmt: skip
    window = {"since": since, "until": until}
    rows = await db.execute(SUMS_SQL.format(column=column, hint=hint), window)
    nth = NTH_LATENCY_SQL.format(column=column, hint=hint)
    data = []
    for row in rows:
        entry = {
            group_by: row["grp"],
            "requests": row["requests"],
            "errors": row["errors"],
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "total_tokens": row["total_tokens"],
            "cost": round(row["cost"], 6),
        }
        for percent in (50, 95):
            found = await db.execute_one(
                nth, {**window, "grp": row["grp"], "offset": nearest_rank(row["requests"], percent)}
            )
            entry[f"p{percent}_latency_ms"] = found["latency_ms"] if found else None
        data.append(entry)
    data.sort(key=lambda e: (-e["requests"], str(e[group_by])))
    return {"group_by": group_by, "since": since, "until": until, "rolled_up": False, "data": data}


async def _rolled_up(db: Database, group_by: str, since: int, until: int) -> list[dict[str, Any]]:
    """Whole hours from ``usage_hourly``, the partial ones at the ends from ``requests``."""
    column = GROUPS[group_by]
    window = rollup.split(since, until)
    found: dict[Any, dict[str, Any]] = {}
    histograms: dict[Any, dict[int, int]] = {}

    def add(row: Any) -> dict[int, int]:
        entry = found.get(row["grp"])
        if entry is None:
            entry = found[row["grp"]] = {
                group_by: row["grp"], "requests": 0, "errors": 0, "prompt_tokens": 0,
                "completion_tokens": 0, "total_tokens": 0, "cost": 0.0,
            }  # fmt: skip
            histograms[row["grp"]] = {}
        entry["requests"] += row["requests"]
        entry["errors"] += row["errors"]
        entry["prompt_tokens"] += row["prompt_tokens"]
        entry["completion_tokens"] += row["completion_tokens"]
        entry["total_tokens"] += row["tokens"]
        entry["cost"] += row["cost"]
        return histograms[row["grp"]]

    for row in await db.execute(rollup.sums_sql(column, bucket=False), window):
        add(row)
    for row in await db.execute(rollup.latency_sql(column, bucket=False), window):
        histogram = histograms.setdefault(row["grp"], {})
        for index, count in enumerate(rollup.histogram_of(row)):
            if count:
                histogram[index] = histogram.get(index, 0) + count
    for row in await db.execute(rollup.edges_sql(column, bucket=False), window):
        histogram = add(row)
        histogram[row["bin"]] = histogram.get(row["bin"], 0) + row["requests"]
    data = []
    for key, entry in found.items():
        entry["cost"] = round(entry["cost"], 6)
        for percent in (50, 95):
            entry[f"p{percent}_latency_ms"] = rollup.bucket_percentile(
                histograms.get(key, {}), percent
            )
        data.append(entry)
    data.sort(key=lambda e: (-e["requests"], str(e[group_by])))
    return data
