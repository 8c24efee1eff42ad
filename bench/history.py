"""A million requests of history: file size before and after pruning, and the overview's time.

    python -m bench.history [--rows 1000000] [--db data/bench-history.db] [--repeat 3]

Fills a fresh database with ``--rows`` requests (one attempt each, a routing trace, 8 providers,
20 models, 5% errors) spread evenly over the last 30 days, as the recorder would write them (the
roll-up added afterwards as the migration does). Then prints, in order: the insert rate; the
file size; the median time
of ``GET /v1/stats/timeseries`` and of the admin UI's overview (``GET /ui/?window=...``) for the
hour, day, week and 30-day windows; then prunes to a 7-day retention and to nothing (as
``history.retention_days`` and ``provider-router db prune`` do: small batches, incremental
vacuum), with the file size and time after each, and ``GET /v1/stats`` over the 30 days once the
raw rows are gone.

    python -m bench.history --recorder

What the roll-up costs the recorder per request: summing a batch and upserting the sums.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

import httpx

from router.app import create_app
from router.settings import Settings
from router.store import retention, rollup
from router.store.migrations import migrate
from router.ui.session import COOKIE

PROVIDERS = [f"p{i}" for i in range(8)]
MODELS = [f"model-{i}" for i in range(20)]
TOKEN = "bench-admin-token-0123456789"  # noqa: S105 - a throwaway token for this run
DAY_MS = 86_400_000
WINDOWS = {"hour": 3_600_000, "day": DAY_MS, "week": 7 * DAY_MS, "month": 30 * DAY_MS}


def size_mib(path: Path) -> float:
    total = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    return total / 1048576


def fill(path: Path, rows: int, now: int) -> float:
    """Insert ``rows`` requests over the 30 days before ``now``; returns rows per second."""
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany(
        "INSERT OR IGNORE INTO providers (id, name, type, created_at, updated_at)"
        " VALUES (?, ?, 'openai', 0, 0)",
        [(p, p) for p in PROVIDERS],
    )
    rng = random.Random(7)
    step = 30 * DAY_MS / rows
    start = now - 30 * DAY_MS
    batch = 500

    def requests(first: int) -> Iterator[tuple[object, ...]]:
        for i in range(first, min(first + batch, rows)):
            ok = rng.random() > 0.05
            provider = rng.choice(PROVIDERS)
            trace = f'{{"candidates":["{provider}"]}}'
            yield (
                f"req_{i:012d}", int(start + i * step), "chat.completions", rng.choice(MODELS),
                provider, "success" if ok else "error", 200 if ok else 502,
                rng.lognormvariate(5, 0.6), 20, 30, 50, 0.0001, 1,
                None if ok else "Upstream answered 502", trace,
            )  # fmt: skip

    began = time.perf_counter()
    for first in range(0, rows, batch):
        chunk = list(requests(first))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status,"
            " status_code, latency_ms, prompt_tokens, completion_tokens, total_tokens, cost,"
            " attempts, error, trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            chunk,
        )
        conn.executemany(
            "INSERT INTO attempts (request_id, n, provider_id, started_at, status, status_code,"
            " latency_ms, error) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
            [(r[0], r[4], r[1], r[5], r[6], r[7], r[13]) for r in chunk],
        )
        conn.execute("COMMIT")
    took = time.perf_counter() - began
    began = time.perf_counter()
    rollup.backfill(conn, 0, now + 1)
    print(f"rolled up {rows} requests in {time.perf_counter() - began:.1f} s (as 0007 does)")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows / took


async def time_reads(path: Path, now: int, repeat: int) -> None:
    settings = Settings(
        database_url=f"sqlite:///{path}", admin_token=TOKEN, health_check_interval_ms=0,
        history_retention_days=0,
    )  # fmt: skip
    app = create_app(settings)
    async with app.starlette.router.lifespan_context(app.starlette):
        cookie, _ = app.starlette.state.ui.sessions.issue()
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", cookies={COOKIE: cookie}
        ) as client:
            targets = []
            for name, span in WINDOWS.items():
                targets.append(
                    (f"timeseries {name}",
                     f"/v1/stats/timeseries?group_by=provider&since={now - span}&until={now}")
                )  # fmt: skip
            targets += [(f"overview {name}", f"/ui/?window={name}") for name in WINDOWS]
            targets.append(("stats 30 days", f"/v1/stats?since={now - 30 * DAY_MS}&until={now}"))
            for label, target in targets:
                times = []
                for _ in range(repeat):
                    began = time.perf_counter()
                    response = await client.get(target, headers=headers)
                    times.append((time.perf_counter() - began) * 1000)
                    assert response.status_code == 200, response.text[:200]
                print(f"  {label:22} {statistics.median(times):8.1f} ms (median of {repeat})")


async def prune(path: Path, before: int) -> tuple[int, float, float]:
    from router.store.db import Database

    db = Database(path)
    await db.open()
    try:
        began = time.perf_counter()
        result = await retention.prune(db, before)
        return result.requests, time.perf_counter() - began, result.longest_batch_ms
    finally:
        await db.close()


def rollup_cost(path: Path) -> None:
    """µs per request of the recorder's roll-up work: summing a batch of 500 (hourly_sums) and
    upserting the sums in one transaction, best of several runs, for a spread-out and a
    typical mix of providers and models."""
    from router.gateway.recorder import RequestRecord, hourly_sums, latency_sums
    from router.store.rollup import LATENCY_UPSERT_SQL, UPSERT_SQL

    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    rng = random.Random(1)
    now = int(time.time() * 1000)
    for providers, models in ((8, 20), (3, 3)):
        batch = [
            RequestRecord(
                id=f"r{i}", created_at=now + i, endpoint="chat.completions",
                model=f"m{rng.randrange(models)}", provider_id=f"p{rng.randrange(providers)}",
                status="success", status_code=200, latency_ms=rng.lognormvariate(5, 0.6),
                prompt_tokens=20, completion_tokens=30, total_tokens=50, cost=0.0001,
            )
            for i in range(500)
        ]  # fmt: skip
        rows = hourly_sums(batch)
        latency = latency_sums(rows)

        def summed(batch: list[RequestRecord] = batch) -> None:
            latency_sums(hourly_sums(batch))

        summing = min(timeit.repeat(summed, number=100, repeat=5)) / 100

        def upsert(
            rows: list[tuple[object, ...]] = rows,
            latency: dict[str, list[tuple[object, ...]]] = latency,
        ) -> None:
            conn.execute("BEGIN")
            conn.executemany(UPSERT_SQL, rows)
            for column, sums in latency.items():
                conn.executemany(LATENCY_UPSERT_SQL[column], sums)
            conn.execute("COMMIT")

        upserting = min(timeit.repeat(upsert, number=50, repeat=5)) / 50
        print(
            f"{providers} providers x {models} models: {len(rows)} groups per batch of 500;"
            f" summing {summing * 2e3:.2f} µs/request, upserting {upserting * 2e3:.2f} µs/request"
        )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="data/bench-history.db")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--recorder", action="store_true", help="time the roll-up's cost instead")
    parser.add_argument(
        "--reuse", action="store_true", help="keep a database filled by an earlier run"
    )
    parser.add_argument("--no-prune", action="store_true", help="time the reads only")
    args = parser.parse_args()
    if args.recorder:
        path = Path(args.db)
        path.parent.mkdir(parents=True, exist_ok=True)
        rollup_cost(path)
        return
    path = Path(args.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.reuse and path.exists():
        with sqlite3.connect(path) as conn:
            now = conn.execute("SELECT max(created_at) + 1 FROM requests").fetchone()[0]
    else:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        now = int(time.time() * 1000)
        rate = fill(path, args.rows, now)
        print(f"filled {args.rows} requests at {rate:,.0f} rows/s;")
    with sqlite3.connect(path) as conn:
        rollup_rows = conn.execute("SELECT count(*) FROM usage_hourly").fetchone()[0]
    print(f"  {rollup_rows} usage_hourly rows; file {size_mib(path):.1f} MiB")
    asyncio.run(time_reads(path, now, args.repeat))
    if args.no_prune:
        return
    for label, before in (("7-day retention", now - 7 * DAY_MS), ("everything", now + 1)):
        pruned, took, longest = asyncio.run(prune(path, before))
        print(f"pruned to {label}: {pruned} requests in {took:.1f} s", end=" ")
        print(f"(longest batch {longest:.1f} ms); file {size_mib(path):.1f} MiB")
    print("after pruning everything (roll-up only):")
    asyncio.run(time_reads(path, now, args.repeat))


if __name__ == "__main__":
    main()
