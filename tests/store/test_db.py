"""The database wrapper: a read that follows a committed write sees it, whatever else is reading."""

from __future__ import annotations

import asyncio
from pathlib import Path

from router.store.db import Database


async def test_a_read_after_a_write_sees_it_while_other_reads_run(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    await db.open()
    try:
        async with db.transaction() as conn:
            await conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            await conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])
        stop = asyncio.Event()

        async def background_reads() -> None:
            while not stop.is_set():
                await db.execute("SELECT n FROM t")

        readers = [asyncio.create_task(background_reads()) for _ in range(4)]
        missed = 0
        try:
            for n in range(10_000, 10_200):
                await db.execute_write("INSERT INTO t VALUES (?)", (n,))
                if await db.execute_one("SELECT n FROM t WHERE n = ?", (n,)) is None:
                    missed += 1
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert missed == 0
    finally:
        await db.close()
