"""`provider-router db prune` and `db vacuum`, as an operator runs them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.cli.main import main
from router.store import rollup
from router.store.migrations import migrate
from tests.helpers import query

DAY = 86_400_000


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Any]:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    database = f"sqlite:///{tmp_path / 'cli.db'}"

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--database", database])
        out, err = capsys.readouterr()
        return code, out, err

    yield run


def seed(path: Path, now: int) -> None:
    conn = sqlite3.connect(path)
    rows = [(f"old{i}", now - 40 * DAY + i) for i in range(30)]
    rows += [(f"new{i}", now - DAY + i) for i in range(10)]
    conn.executemany(
        "INSERT INTO requests (id, created_at, endpoint, status, status_code, latency_ms)"
        " VALUES (?, ?, 'chat.completions', 'success', 200, 5)",
        rows,
    )
    rollup.backfill(conn, 0, now)
    conn.commit()
    conn.close()


def test_prune_by_retention_with_a_dry_run_first(cli: Any, tmp_path: Path) -> None:
    migrate(tmp_path / "cli.db")
    now = int(time.time() * 1000)
    seed(tmp_path / "cli.db", now)
    code, out, _ = cli("db", "prune", "--dry-run")
    assert code == 0
    assert "Would prune 30 request(s)" in out
    assert query(tmp_path / "cli.db", "SELECT count(*) FROM requests") == [(40,)]
    code, out, _ = cli("db", "prune", "--json")
    assert code == 0
    result = orjson.loads(out)
    assert (result["requests"], result["dry_run"]) == (30, False)
    assert query(tmp_path / "cli.db", "SELECT count(*) FROM requests") == [(10,)]
    # The roll-up keeps what was pruned.
    assert query(tmp_path / "cli.db", "SELECT sum(requests) FROM usage_hourly") == [(40,)]


def test_prune_before_a_date(cli: Any, tmp_path: Path) -> None:
    migrate(tmp_path / "cli.db")
    now = int(time.time() * 1000)
    seed(tmp_path / "cli.db", now)
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now - 2 * DAY) / 1000))
    code, out, _ = cli("db", "prune", "--before", cutoff)
    assert code == 0 and "Pruned 30 request(s)" in out and "shrank" in out
    assert query(tmp_path / "cli.db", "SELECT count(*) FROM requests") == [(10,)]


def test_prune_refuses_bad_dates_and_a_future_one(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli("db", "prune", "--before", "yesterday")
    assert code == 1 and "--before must be a date" in err and "'yesterday'" in err
    code, _, err = cli("db", "prune", "--before", "2999-01-01")
    assert code == 1 and "in the future" in err


def test_prune_with_nothing_configured_says_what_to_do(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "keep.toml"
    config.write_text("[history]\nretention_days = 0\n")
    monkeypatch.setenv("PROVIDER_ROUTER_CONFIG", str(config))
    code, _, err = cli("db", "prune")
    assert code == 1 and "--before DATE" in err


def test_vacuum_switches_an_old_file_to_incremental(cli: Any, tmp_path: Path) -> None:
    migrate(tmp_path / "cli.db")
    path = tmp_path / "cli.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")  # as a database created before this release
    conn.close()
    assert query(path, "PRAGMA auto_vacuum") == [(0,)]
    code, out, _ = cli("db", "vacuum")
    assert code == 0 and "Vacuumed" in out
    assert query(path, "PRAGMA auto_vacuum") == [(2,)]
