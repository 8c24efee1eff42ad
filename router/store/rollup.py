"""The hourly roll-up of request history (``usage_hourly``, schema/0007) and how to read it.

One row per (hour, endpoint, provider, model, client key) holds the hour's requests, errors,
tokens, cost and a latency histogram over the fixed buckets :data:`LATENCY_EDGES_MS`. The recorder
adds each batch's sums (:data:`UPSERT_SQL`, one row per group) in the transaction that inserts the
batch's requests, and pruning never touches it, so statistics over months stay right after the raw
rows are gone; it is also what lets week and month windows be read without scanning a million
rows. Rows inserted into ``requests`` some other way (an import, a test, a seeding script) are
rolled up with :func:`backfill`, as the migration did for the history before it.

The histograms are kept a second time per hour and provider (``latency_by_provider``) and per
hour and model (``latency_by_model``): summing 32 columns over every row of a month of
``usage_hourly`` costs several times more than its counts, so long windows read counts from
``usage_hourly`` and percentiles from these much smaller tables (:data:`LATENCY_TABLES`).

A window read from the roll-up is exact to the request when its edges fall inside the retained
history: whole hours come from ``usage_hourly``, the partial hours at either end from
``requests``. Latency percentiles read off the fixed buckets are approximate (linear inside the
bucket that holds the rank, as Prometheus's ``histogram_quantile`` does).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from router.store.db import Connection, Database

HOUR_MS = 3_600_000
# Upper edges, exclusive: bucket i holds latencies in [edge[i-1], edge[i]); the last bucket holds
# everything from the last edge up. schema/0007_history.sql spells the same edges out.
LATENCY_EDGES_MS: tuple[int, ...] = (
    5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000, 2500,
    3000, 4000, 5000, 7500, 10000, 15000, 20000, 30000, 45000, 60000, 120000, 300000,
)  # fmt: skip
BUCKETS = len(LATENCY_EDGES_MS) + 1
LATENCY_COLUMNS = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
# The settings row that says where pruning stopped: no request before it is kept.
PRUNED_BEFORE_KEY = "history_pruned_before"


# group column -> the table of its hourly latency histograms
LATENCY_TABLES = {"provider_id": "latency_by_provider", "model": "latency_by_model"}
_KEYS = "hour, endpoint, provider_id, model, client_key_id"
_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost")
# Qualified: PostgreSQL finds a bare column name ambiguous beside ``excluded``.
_ADD = ", ".join(f"{c} = usage_hourly.{c} + excluded.{c}" for c in (*_SUMS, *LATENCY_COLUMNS))
UPSERT_SQL = (
    f"INSERT INTO usage_hourly ({_KEYS}, {', '.join(_SUMS)}, {', '.join(LATENCY_COLUMNS)})"
    f" VALUES ({', '.join('?' * (5 + len(_SUMS) + BUCKETS))})"
    f" ON CONFLICT ({_KEYS}) DO UPDATE SET {_ADD}"
)


LATENCY_UPSERT_SQL = {
    column: (
        f"INSERT INTO {table} (hour, {column}, {', '.join(LATENCY_COLUMNS)})"
        f" VALUES ({', '.join('?' * (2 + BUCKETS))}) ON CONFLICT (hour, {column}) DO UPDATE SET"
        f" {', '.join(f'{c} = {table}.{c} + excluded.{c}' for c in LATENCY_COLUMNS)}"
    )
    for column, table in LATENCY_TABLES.items()
}


def latency_bucket(latency_ms: float) -> int:
    """The fixed bucket of one latency (the same as :func:`latency_bucket_sql`)."""
    return bisect_right(LATENCY_EDGES_MS, latency_ms)


# Boolean sums spelled so both SQLite and PostgreSQL take them.
_ERRORS = "SUM(CASE WHEN status = 'success' THEN 0 ELSE 1 END)"


def backfill_sql() -> list[str]:
    """The statements that roll up the ``requests`` rows in ``[:since, :until)`` (adding to what
    is there), valid on SQLite and PostgreSQL."""
    buckets = ", ".join(f"SUM(CASE WHEN b = {i} THEN 1 ELSE 0 END)" for i in range(BUCKETS))
    rows = (
        f"(SELECT *, {latency_bucket_sql('latency_ms')} AS b FROM requests"
        " WHERE created_at >= :since AND created_at < :until) AS r"
    )
    statements = [
        f"INSERT INTO usage_hourly ({_KEYS}, {', '.join(_SUMS)}, {', '.join(LATENCY_COLUMNS)})"
        " SELECT created_at - created_at % 3600000, endpoint, coalesce(provider_id, ''),"
        " coalesce(model, ''), coalesce(client_key_id, ''), COUNT(*),"
        f" {_ERRORS},"
        " coalesce(SUM(prompt_tokens), 0), coalesce(SUM(completion_tokens), 0),"
        f" coalesce(SUM(total_tokens), 0), coalesce(SUM(cost), 0.0), {buckets}"
        f" FROM {rows} WHERE true GROUP BY 1, 2, 3, 4, 5"
        f" ON CONFLICT ({_KEYS}) DO UPDATE SET {_ADD}"
    ]
    for column, table in LATENCY_TABLES.items():
        statements.append(
            f"INSERT INTO {table} (hour, {column}, {', '.join(LATENCY_COLUMNS)})"
            f" SELECT created_at - created_at % 3600000, coalesce({column}, ''), {buckets}"
            f" FROM {rows} WHERE true GROUP BY 1, 2 ON CONFLICT (hour, {column}) DO UPDATE SET"
            f" {', '.join(f'{c} = {table}.{c} + excluded.{c}' for c in LATENCY_COLUMNS)}"
        )
    return statements


def backfill(conn: Any, since: int, until: int) -> None:
    """Roll up the ``requests`` rows in ``[since, until)`` on a plain (synchronous) sqlite3
    connection: for rows written straight into the table, not through the recorder."""
    for sql in backfill_sql():
        conn.execute(sql, {"since": since, "until": until})


async def backfill_in(conn: Connection, since: int, until: int) -> None:
    """:func:`backfill` inside a write transaction of either backend."""
    for sql in backfill_sql():
        await conn.execute(sql, {"since": since, "until": until})


def latency_bucket_sql(column: str) -> str:
    """The fixed latency bucket of ``column`` as SQL (what :func:`latency_bucket` gives)."""
    whens = " ".join(f"WHEN {column} < {edge} THEN {i}" for i, edge in enumerate(LATENCY_EDGES_MS))
    return f"CASE {whens} ELSE {BUCKETS - 1} END"


def floor_hour(ms: int) -> int:
    return ms - ms % HOUR_MS


def ceil_hour(ms: int) -> int:
    return -(-ms // HOUR_MS) * HOUR_MS


def bucket_percentile(histogram: Mapping[int, int], percent: int) -> float | None:
    """The ``percent``th percentile of a fixed-bucket histogram (bucket -> count), interpolated
    linearly inside the bucket holding the nearest rank; the overflow bucket answers its lower
    edge (nothing bounds it above)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(math.ceil(total * percent / 100), 1)
    seen = 0
    for index in sorted(histogram):
        count = histogram[index]
        if count and seen + count >= rank:
            lower = 0 if index == 0 else LATENCY_EDGES_MS[index - 1]
            if index >= len(LATENCY_EDGES_MS):
                return float(lower)
            upper = LATENCY_EDGES_MS[index]
            return round(lower + (upper - lower) * (rank - seen) / count, 3)
        seen += count
    return None  # unreachable: seen reaches total


async def pruned_before(db: Database) -> int:
    """The time (Unix ms) before which request rows have been pruned; 0 when none were."""
    row = await db.execute_one("SELECT value FROM settings WHERE key = ?", (PRUNED_BEFORE_KEY,))
    return int(row["value"]) if row is not None else 0


def _int(expression: str) -> str:
    # PostgreSQL sums BIGINTs into NUMERIC (read back as Decimal); SQLite's sums stay integers.
    return f"CAST({expression} AS BIGINT)"


def sums_sql(group_column: str, *, bucket: bool) -> str:
    """Sum ``usage_hourly``'s counts over ``[:h1, :h2)`` per group (and per time bucket of
    ``:bucket`` ms from ``:since`` when ``bucket``)."""
    keys = f"NULLIF({group_column}, '') AS grp"
    groups = "grp"
    if bucket:
        keys = f"(hour - :since) / :bucket AS b, {keys}"
        groups = "b, grp"
    return (
        f"SELECT {keys}, {_int('SUM(requests)')} AS requests, {_int('SUM(errors)')} AS errors,"
        f" {_int('SUM(prompt_tokens)')} AS prompt_tokens,"
        f" {_int('SUM(completion_tokens)')} AS completion_tokens,"
        f" {_int('SUM(total_tokens)')} AS tokens, SUM(cost) AS cost"
        f" FROM usage_hourly WHERE hour >= :h1 AND hour < :h2 GROUP BY {groups}"
    )


def latency_sql(group_column: str, *, bucket: bool) -> str:
    """Sum the latency histograms over ``[:h1, :h2)`` per group (and time bucket), from the
    group's own small table."""
    keys = f"NULLIF({group_column}, '') AS grp"
    groups = "grp"
    if bucket:
        keys = f"(hour - :since) / :bucket AS b, {keys}"
        groups = "b, grp"
    histogram = ", ".join(f"{_int(f'SUM({c})')} AS {c}" for c in LATENCY_COLUMNS)
    return (
        f"SELECT {keys}, {histogram} FROM {LATENCY_TABLES[group_column]}"
        f" WHERE hour >= :h1 AND hour < :h2 GROUP BY {groups}"
    )


def edges_sql(group_column: str, *, bucket: bool) -> str:
    """The raw rows of the partial hours at the window's ends, ``[:since, :h1)`` and
    ``[:h2, :until)``, summed per group (and time bucket) and fixed latency bucket."""
    keys = f"{group_column} AS grp"
    groups = "grp, bin"
    if bucket:
        keys = f"(created_at - :since) / :bucket AS b, {keys}"
        groups = "b, grp, bin"
    return (
        f"SELECT {keys}, {latency_bucket_sql('latency_ms')} AS bin, COUNT(*) AS requests,"
        f" {_int(_ERRORS)} AS errors,"
        f" {_int('coalesce(SUM(prompt_tokens), 0)')} AS prompt_tokens,"
        f" {_int('coalesce(SUM(completion_tokens), 0)')} AS completion_tokens,"
        f" {_int('coalesce(SUM(total_tokens), 0)')} AS tokens, coalesce(SUM(cost), 0.0) AS cost"
        " FROM requests WHERE (created_at >= :since AND created_at < :h1)"
        f" OR (created_at >= :h2 AND created_at < :until) GROUP BY {groups}"
    )


def split(since: int, until: int) -> dict[str, int]:
    """The window's whole hours ``[h1, h2)`` and its ends, as query parameters."""
    h1, h2 = ceil_hour(since), floor_hour(until)
    if h2 <= h1:  # no whole hour inside: everything from the raw rows
        h1 = h2 = until
    return {"since": since, "until": until, "h1": h1, "h2": h2}


def histogram_of(row: Any) -> Sequence[int]:
    """The histogram columns of a :func:`latency_sql` row, in bucket order."""
    return [row[c] or 0 for c in LATENCY_COLUMNS]
