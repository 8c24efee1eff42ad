"""How long ``GET /v1/stats`` takes on a large history: fills a database, times the query.

    python -m bench.stats --rows 1000000 [--db /tmp/stats.db]

Prints the milliseconds per call for each grouping, over all time and over the last tenth.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from router.store.db import Database
from router.store.migrations import migrate
from router.store.stats import usage_stats

PROVIDERS = [f"p{i}" for i in range(8)]
MODELS = [f"model-{i}" for i in range(20)]


def fill(path: Path, rows: int) -> None:
    migrate(path)
    conn = sqlite3.connect(path)
    if conn.execute("SELECT count(*) FROM requests").fetchone()[0] >= rows:
        conn.close()
        return
    rng = random.Random(7)
    stamp = 1_700_000_000_000
    conn.executemany(
        "INSERT OR IGNORE INTO providers (id, name, type, created_at, updated_at)"
        " VALUES (?, ?, 'openai', 0, 0)",
        [(p, p) for p in PROVIDERS],
    )

    def gen() -> Iterator[tuple[object, ...]]:
        for i in range(rows):
            ok = rng.random() > 0.05
            yield (
                f"req_{i:012d}", stamp + i * 10, "/v1/chat/completions", rng.choice(MODELS),
                rng.choice(PROVIDERS), "success" if ok else "error", 200 if ok else 502,
                rng.lognormvariate(5, 0.6), 20, 30, 50, 0.0001,
            )  # fmt: skip

    conn.executemany(
        "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status, status_code,"
        " latency_ms, prompt_tokens, completion_tokens, total_tokens, cost)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        gen(),
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="data/bench-stats.db")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    fill(Path(args.db), args.rows)
    asyncio.run(measure(Path(args.db), args.rows, args.repeat))


if __name__ == "__main__":
    main()
