"""Schema migrations: applied once, all-or-nothing, with a backup before touching an existing file.

Results are read back with plain ``sqlite3``, as an operator would.
"""

from __future__ import annotations

import re
import sqlite3
import stat
from pathlib import Path

import pytest

from router.cli.main import main
from router.store import migrations
from router.store.migrations import Migration, MigrationError, migrate

TABLES = {
    "providers",
    "provider_configs",
    "models",
    "provider_models",
    "requests",
    "attempts",
    "api_keys",
    "settings",
    "schema_migrations",
}
EXTRA = Migration(2, "extra", "CREATE TABLE extra (x INTEGER NOT NULL);")


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return {name for (name,) in rows}


def applied_versions(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(v), str(n)) for v, n in rows]
    finally:
        conn.close()


SHIPPED = migrations.available


def real_initial() -> Migration:
    [initial] = [m for m in SHIPPED() if m.version == 1]
    return initial


@pytest.fixture(autouse=True)
def only_initial(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests are about the mechanism; later shipped migrations must not change them.
    with_extra(monkeypatch)


def with_extra(monkeypatch: pytest.MonkeyPatch, *extra: Migration) -> None:
    initial = real_initial()
    monkeypatch.setattr(migrations, "available", lambda: [initial, *extra])


def test_the_shipped_migrations_start_with_0001_initial() -> None:
    found = SHIPPED()
    assert [(m.version, m.name) for m in found][:1] == [(1, "initial")]
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert "CREATE TABLE providers" in found[0].sql


def test_migrating_a_new_file_applies_0001_and_takes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "router.db"
    applied, backup = migrate(path)
    assert [(m.version, m.name) for m in applied] == [(1, "initial")]
    assert backup is None
    assert path.is_file()
    assert tables(path) >= TABLES
    assert applied_versions(path) == [(1, "initial")]
    assert not list(tmp_path.rglob("*.bak"))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(
            "SELECT value FROM settings WHERE key = 'config_version'"
        ).fetchone() == ("0",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_a_second_migrate_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    migrate(path)
    conn = sqlite3.connect(path)
    stamp = conn.execute("SELECT applied_at FROM schema_migrations").fetchone()
    conn.close()
    applied, backup = migrate(path)
    assert applied == []
    assert backup is None
    assert applied_versions(path) == [(1, "initial")]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT applied_at FROM schema_migrations").fetchone() == stamp
    conn.close()
    assert not list(tmp_path.glob("*.bak"))


def test_status_lists_applied_and_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "router.db"
    conn = migrations.connect(path)
    try:
        fresh = migrations.status(conn)
    finally:
        conn.close()
    assert fresh.applied == []
    assert [m.version for m in fresh.pending] == [m.version for m in migrations.available()]

    migrate(path)
    with_extra(monkeypatch, EXTRA)
    conn = migrations.connect(path)
    try:
        state = migrations.status(conn)
    finally:
        conn.close()
    [(version, name, applied_at)] = state.applied
    assert (version, name) == (1, "initial")
    assert applied_at > 1_600_000_000_000  # Unix milliseconds
    assert state.pending == [EXTRA]


def test_deleting_a_provider_with_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        for pid in ("kept", "free"):
            conn.execute(
                "INSERT INTO providers (id, name, type, created_at, updated_at)"
                " VALUES (?, ?, 'openai', 1, 1)",
                (pid, pid),
            )
        conn.execute(
            "INSERT INTO provider_configs (provider_id, key, value, created_at, updated_at)"
            " VALUES ('free', 'baseURL', '\"http://x\"', 1, 1)"
        )
        conn.execute(
            "INSERT INTO requests (id, created_at, endpoint, provider_id, status, status_code,"
            " latency_ms) VALUES ('r1', 1, '/v1/chat/completions', 'kept', 'success', 200, 1.0)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
            conn.execute("DELETE FROM providers WHERE id = 'kept'")
        assert conn.execute("SELECT count(*) FROM providers WHERE id = 'kept'").fetchone() == (1,)
        # A provider without history can go, and its config goes with it.
        conn.execute("DELETE FROM providers WHERE id = 'free'")
        assert conn.execute("SELECT count(*) FROM provider_configs").fetchone() == (0,)
    finally:
        conn.close()


def test_an_attempt_needs_an_existing_provider(tmp_path: Path) -> None:
    path = tmp_path / "router.db"
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(
            "INSERT INTO requests (id, created_at, endpoint, status, status_code, latency_ms)"
            " VALUES ('r1', 1, '/v1/chat/completions', 'error', 502, 1.0)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute(
                "INSERT INTO attempts (request_id, n, provider_id, started_at, status, latency_ms)"
                " VALUES ('r1', 1, 'ghost', 1, 'error', 1.0)"
            )
    finally:
        conn.close()


def test_a_failing_migration_is_rolled_back_entirely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "router.db"
    broken = Migration(2, "broken", "CREATE TABLE ok_table (x); THIS IS NOT SQL;")
    with_extra(monkeypatch, broken)
    with pytest.raises(MigrationError) as caught:
        migrate(path)
    assert "0002_broken.sql" in str(caught.value)
    assert "rolled back" in str(caught.value)
    assert "ok_table" not in tables(path)
    assert tables(path) >= TABLES  # 0001 ran in its own transaction and stays
    assert applied_versions(path) == [(1, "initial")]

    # Fixed, the next migrate applies it (and backs up first, since 0001 is there).
    fixed = Migration(2, "broken", "CREATE TABLE ok_table (x);")
    with_extra(monkeypatch, fixed)
    applied, backup = migrate(path)
    assert applied == [fixed]
    assert backup is not None
    assert "ok_table" in tables(path)
    assert applied_versions(path) == [(1, "initial"), (2, "broken")]


def test_a_failing_migration_stops_the_ones_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "router.db"
    migrate(path)
    broken = Migration(2, "broken", "INSERT INTO no_such_table VALUES (1);")
    after = Migration(3, "after", "CREATE TABLE after_table (x);")
    with_extra(monkeypatch, broken, after)
    with pytest.raises(MigrationError, match=r"0002_broken\.sql"):
        migrate(path)
    assert "after_table" not in tables(path)
    assert applied_versions(path) == [(1, "initial")]


def test_an_existing_database_is_backed_up_before_migrating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "router.db"
    migrate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO providers (id, name, type, created_at, updated_at)"
        " VALUES ('p1', 'Kept', 'openai', 1, 1)"
    )
    conn.close()

    with_extra(monkeypatch, EXTRA)
    applied, backup = migrate(path)
    assert applied == [EXTRA]
    assert backup is not None
    assert backup.parent == path.parent
    assert re.fullmatch(r"router\.db\.\d{8}T\d{6}Z\.before-0002\.bak", backup.name), backup.name
    assert list(tmp_path.glob("*.bak")) == [backup]
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600

    copy = sqlite3.connect(backup)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT id, name FROM providers").fetchall() == [("p1", "Kept")]
        names = {n for (n,) in copy.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "extra" not in names
        assert copy.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
    finally:
        copy.close()
    assert "extra" in tables(path)
    assert applied_versions(path) == [(1, "initial"), (2, "extra")]


def test_cli_db_status_prints_applied_and_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "router.db"
    migrate(path)
    with_extra(monkeypatch, EXTRA)
    assert main(["db", "status", "--database", f"sqlite:///{path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"database: {path}"
    assert re.fullmatch(r"applied  0001_initial  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[1])
    assert lines[2:] == ["pending  0002_extra"]
    # status only reports: 0002 is still not applied.
    assert applied_versions(path) == [(1, "initial")]


def test_cli_db_status_on_an_up_to_date_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "router.db"
    migrate(path)
    assert main(["db", "status", "--database", f"sqlite:///{path}"]) == 0
    out = capsys.readouterr().out
    assert "applied  0001_initial" in out
    assert "pending" not in out


def test_cli_db_status_with_a_bad_url_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["db", "status", "--database", "mysql://db/x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("provider-router: ")
    assert "'mysql://db/x' is not supported" in captured.err


def test_cli_db_status_does_not_create_a_missing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "typo" / "router.db"
    main(["db", "status", "--database", f"sqlite:///{path}"])
    capsys.readouterr()
    assert not path.parent.exists()


def test_0005_renames_client_disconnected_and_attributes_failed_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "router.db"
    shipped = SHIPPED()
    monkeypatch.setattr(migrations, "available", lambda: [m for m in shipped if m.version < 5])
    migrate(path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO providers (id, name, type, created_at, updated_at)"
            " VALUES ('a', 'a', 'openai', 1, 1), ('b', 'b', 'openai', 1, 1)"
        )
        rows = [
            # id, provider_id, status, attempts
            ("failed", None, "error", 2),
            ("left", None, "client_disconnected", 1),
            ("refused", None, "error", 0),  # never reached a provider: stays unattributed
            ("served", "a", "success", 1),
        ]
        conn.executemany(
            "INSERT INTO requests (id, created_at, endpoint, provider_id, status, status_code,"
            " latency_ms, attempts) VALUES (?, 1, '/v1/chat/completions', ?, ?, 200, 1.0, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO attempts (request_id, n, provider_id, started_at, status, latency_ms)"
            " VALUES (?, ?, ?, 1, ?, 1.0)",
            [("failed", 1, "a", "error"), ("failed", 2, "b", "error"),
             ("left", 1, "b", "client_closed"), ("served", 1, "a", "success")],
        )  # fmt: skip
    monkeypatch.setattr(migrations, "available", lambda: shipped)
    applied, _ = migrate(path)
    assert (5, "operators") in [(m.version, m.name) for m in applied]
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT id, provider_id, status FROM requests ORDER BY id").fetchall()
    assert found == [
        ("failed", "b", "error"),  # the last provider tried
        ("left", "b", "client_closed"),
        ("refused", None, "error"),
        ("served", "a", "success"),
    ]
