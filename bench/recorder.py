"""What one recorder batch costs to write, on SQLite and on PostgreSQL (issue 18).

Writes the same batches of history (one request row and one attempt row each, plus the provider
counters, as the recorder does: one transaction per batch) through ``Recorder``'s own write path,
and for PostgreSQL also with a plain ``executemany`` of INSERTs instead of COPY, to show what COPY
buys. Prints milliseconds per batch and rows per second.

    .venv/bin/python -m bench.recorder --batches 20 --batch-size 500

SQLite goes to a temporary file; PostgreSQL to a database of its own on the test server
(scripts/test-services), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from router.gateway.recorder import AttemptRecord, Recorder, RequestRecord
from router.secrets import Cipher
from router.store import providers
from router.store.db import Database
from router.store.migrations import migrate, migrate_postgres
from router.store.postgres import PostgresDatabase
from tests.helpers import TEST_SECRET_KEY, fresh_postgres_database, service_url


def batch(start: int, size: int) -> list[RequestRecord]:
    records = []
    for i in range(start, start + size):
        attempt = AttemptRecord(1, "p", 1_000 + i, "success", 200, 12.5)
        records.append(
            RequestRecord(
                id=f"req-{i:09d}",
                created_at=1_000 + i,
                endpoint="/v1/chat/completions",
                model="m",
                status="success",
                status_code=200,
                latency_ms=13.0,
                provider_id="p",
                prompt_tokens=10,
                completion_tokens=20,
                total_tokens=30,
                cost=0.0001,
                attempts=[attempt],
            )
        )
    return records


class PlainInserts(PostgresDatabase):
    """PostgreSQL with the base class's multi-row path (executemany of INSERT) instead of COPY."""

    insert_rows = Database.insert_rows


async def measure(db: Database, batches: int, size: int) -> list[float]:
    await db.open()
    try:
        await providers.create_provider(
            db, {"id": "p", "name": "p", "type": "openai", "config": {"baseURL": "http://x/v1"}}
        )
        recorder = Recorder(db, queue_size=size, batch_size=size, flush_interval_s=1)
        took = []
        for n in range(batches):
            rows = batch(n * size, size)
            begin = time.perf_counter()
            await recorder._write_rows(rows)
            took.append(time.perf_counter() - begin)
        return took
    finally:
        await db.close()


def show(name: str, took: list[float], size: int) -> None:
    ms = sorted(t * 1000 for t in took)
    per_s = size / statistics.median(took)
    print(
        f"{name:<28} per batch of {size}: p50 {statistics.median(ms):7.1f} ms,"
        f" max {ms[-1]:7.1f} ms  ~ {per_s:,.0f} requests/s"
    )


async def run(batches: int, size: int) -> None:
    cipher = Cipher(TEST_SECRET_KEY)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        migrate(path)
        show(
            "SQLite (executemany)",
            await measure(Database(path, cipher=cipher), batches, size),
            size,
        )
    server = service_url("postgres")
    if server is None:
        print("No test PostgreSQL (scripts/test-services): PostgreSQL not measured.")
        return
    for name, kind in (
        ("PostgreSQL (COPY)", PostgresDatabase),
        ("PostgreSQL (INSERT)", PlainInserts),
    ):
        with fresh_postgres_database(server) as url:
            await migrate_postgres(url)
            show(name, await measure(kind(url, cipher=cipher), batches, size), size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.batches, args.batch_size))


if __name__ == "__main__":
    main()
