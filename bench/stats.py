"""How long the statistics take on a large history: fills a database, times the queries.

    python -m bench.stats --rows 1000000 [--db /tmp/stats.db]
    python -m bench.stats --overview --rows 1000000 [--db data/bench-overview.db]

The first prints the milliseconds per ``GET /v1/stats`` call for each grouping, over all time and
over the last tenth. ``--overview`` spreads the rows evenly over the last 30 days (as a million
requests a month would be), then renders the admin UI's overview (``GET /ui/?window=...``) in
process, signed in, for each window, and ``GET /v1/stats/timeseries`` alone (median ms).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from router.app import create_app
from router.settings import Settings
from router.store import rollup
from router.store.db import Database
from router.store.migrations import migrate
from router.store.stats import usage_stats
from router.ui.session import COOKIE

PROVIDERS = [f"p{i}" for i in range(8)]
MODELS = [f"model-{i}" for i in range(20)]


def fill(path: Path, rows: int, *, stamp: int = 1_700_000_000_000, step_ms: int = 10) -> None:
    """Fill ``path`` with ``rows`` requests, one every ``step_ms`` from ``stamp`` (once)."""
    migrate(path)
    conn = sqlite3.connect(path)
    if conn.execute("SELECT count(*) FROM requests").fetchone()[0] >= rows:
        conn.close()
        return
    rng = random.Random(7)
    conn.executemany(
        "INSERT OR IGNORE INTO providers (id, name, type, created_at, updated_at)"
        " VALUES (?, ?, 'openai', 0, 0)",
        [(p, p) for p in PROVIDERS],
    )

    def gen() -> Iterator[tuple[object, ...]]:
        for i in range(rows):
            ok = rng.random() > 0.05
            yield (
                f"req_{i:012d}", stamp + i * step_ms, "chat.completions", rng.choice(MODELS),
                rng.choice(PROVIDERS), "success" if ok else "error", 200 if ok else 502,
                rng.lognormvariate(5, 0.6), 20, 30, 50, 0.0001,
            )  # fmt: skip

    conn.executemany(
        "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status, status_code,"
        " latency_ms, prompt_tokens, completion_tokens, total_tokens, cost)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        gen(),
    )
    # Not through the recorder: roll the rows up as migration 0007 does.
    rollup.backfill(conn, stamp, stamp + rows * step_ms)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def measure(path: Path, rows: int, repeat: int) -> None:
    db = Database(path)
    await db.open()
    try:
        last_tenth = str(1_700_000_000_000 + rows * 9)
        for group_by in ("provider", "model"):
            for label, params in (("all", {}), ("last 10%", {"since": last_tenth})):
                start = time.perf_counter()
                for _ in range(repeat):
                    await usage_stats(db, {"group_by": group_by, **params})
                took = (time.perf_counter() - start) * 1000 / repeat
                print(f"stats group_by={group_by:8} {label:8} {rows} rows: {took:8.1f} ms")
    finally:
        await db.close()


TOKEN = "bench-admin-token-0123456789"  # noqa: S105 - a throwaway token for this run
MONTH_MS = 30 * 86400 * 1000


def prepare_recent(path: Path, rows: int) -> None:
    if path.exists():
        with sqlite3.connect(path) as conn:
            newest = conn.execute("SELECT max(created_at) FROM requests").fetchone()[0] or 0
        if newest < time.time() * 1000 - 3600_000:  # stale: the windows would be empty
            path.unlink()
    now = int(time.time() * 1000)
    fill(path, rows, stamp=now - MONTH_MS, step_ms=max(MONTH_MS // rows, 1))


async def measure_overview(path: Path, repeat: int) -> None:
    settings = Settings(
        database_url=f"sqlite:///{path}", admin_token=TOKEN, health_check_interval_ms=0
    )
    app = create_app(settings)
    async with app.starlette.router.lifespan_context(app.starlette):
        cookie, _ = app.starlette.state.ui.sessions.issue()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", cookies={COOKIE: cookie}
        ) as client:
            targets = [f"/ui/?window={w}" for w in ("hour", "day", "week", "month")]
            targets.append("/v1/stats/timeseries?group_by=provider")
            for target in targets:
                times = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    headers = {"authorization": f"Bearer {TOKEN}"}
                    response = await client.get(target, headers=headers)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.text[:200]
                print(f"{target:45} {statistics.median(times):8.1f} ms (median of {repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="data/bench-stats.db")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--overview", action="store_true", help="time the UI overview instead")
    args = parser.parse_args()
    if args.overview:
        prepare_recent(Path(args.db), args.rows)
        asyncio.run(measure_overview(Path(args.db), args.repeat))
        return
    fill(Path(args.db), args.rows)
    asyncio.run(measure(Path(args.db), args.rows, args.repeat))


if __name__ == "__main__":
    main()
