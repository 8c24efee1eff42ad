"""``provider-router db copy``: a whole installation from SQLite to PostgreSQL and back, every row
the same, credentials still encrypted with the same key; a dry run counts and writes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.cli.main import main
from router.gateway.recorder import AttemptRecord, Recorder, RequestRecord
from router.secrets import Cipher, generate_key
from router.store import client_keys, configs, links, providers
from router.store.backend import database_for_url
from router.store.copy import tables
from router.store.db import Database
from router.store.migrations import migrate
from router.store.postgres import PostgresDatabase
from tests.helpers import TEST_SECRET_KEY, make_settings, query

SECRET = "sk-copy-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROVIDER_ROUTER_SECRET_KEY", TEST_SECRET_KEY)


async def installation(path: Path) -> None:
    """A SQLite installation with a provider (an encrypted key), links, a client key, history
    written by the real recorder (so the counters moved) and a changed config version."""
    migrate(path)
    db = Database(path, cipher=Cipher(TEST_SECRET_KEY))
    await db.open()
    try:
        body = {
            "id": "up",
            "name": "Upstream",
            "type": "openai",
            "priority": 3,
            "config": {"baseURL": "http://up.test/v1", "apiKey": SECRET, "timeout": 1500},
        }
        await providers.create_provider(db, body)
        await links.link_model(db, "up", {"model_id": "gpt-x", "input_cost_per_1k": 0.5})
        await client_keys.create_key(db, {"name": "team", "rpm_limit": 60, "models": ["gpt-x"]})
        recorder = Recorder(db, queue_size=100, batch_size=10, flush_interval_s=0.001)
        recorder.start()
        for i in range(25):
            status = "success" if i % 5 else "error"
            attempt = AttemptRecord(1, "up", 1_000 + i, status, 200 if i % 5 else 503, 12.5 + i)
            await recorder.record(
                RequestRecord(
                    id=f"r{i:03d}",
                    created_at=1_000 + i,
                    endpoint="/v1/chat/completions",
                    model="gpt-x",
                    status=status,
                    status_code=attempt.status_code or 0,
                    latency_ms=13.25 + i,
                    provider_id="up",
                    prompt_tokens=i,
                    total_tokens=2 * i,
                    cost=0.001 * i,
                    attempts=[attempt],
                )
            )
        await recorder.stop()
    finally:
        await db.close()


def dump(where: str | Path, names: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(query(where, f'SELECT * FROM "{t}"'), key=repr) for t in names}


async def table_names(url: str) -> list[str]:
    db = database_for_url(url, make_settings(Path(), secret_key=TEST_SECRET_KEY))
    await db.open()
    try:
        return await tables(db)
    finally:
        await db.close()


async def copy(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    # The command runs its own event loop, as from a shell: off this test's loop.
    code = await asyncio.to_thread(main, ["db", "copy", *args, "--json"])
    out, err = capsys.readouterr()
    return code, (orjson.loads(out) if out else None), err


async def test_sqlite_to_postgresql_and_back_keeps_every_row(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "router.db"
    await installation(source)
    sqlite_url = f"sqlite:///{source}"
    names = await table_names(sqlite_url)
    before = dump(source, names)
    assert len(before["requests"]) == 25 and len(before["attempts"]) == 25

    code, planned, err = await copy(capsys, "--from", sqlite_url, "--to", postgres_url, "--dry-run")
    assert code == 0, err
    assert planned["dry_run"] is True
    assert planned["tables"] == {t: len(rows) for t, rows in before.items()}
    assert query(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (0,)
    ]  # a dry run writes nothing, not even the schema

    code, done, err = await copy(capsys, "--from", sqlite_url, "--to", postgres_url)
    assert code == 0, err
    assert done["tables"] == planned["tables"]
    assert dump(postgres_url, names) == before
    stored = query(postgres_url, "SELECT value FROM provider_configs WHERE key = 'apiKey'")
    assert stored[0][0].startswith('"enc:v1:') and SECRET not in stored[0][0]
    assert query(postgres_url, "SELECT success_count, error_count FROM providers") == [(20, 5)]
    target = PostgresDatabase(postgres_url, cipher=Cipher(TEST_SECRET_KEY))
    await target.open()
    try:
        assert (await configs.provider_config(target, "up"))["apiKey"] == SECRET
        # The copy goes on working: a write lands beside the copied rows.
        await providers.create_provider(
            target,
            {
                "id": "more",
                "name": "More",
                "type": "openai",
                "config": {"baseURL": "http://m.test/v1"},
            },
        )
    finally:
        await target.close()

    back = tmp_path / "back.db"
    code, _, err = await copy(capsys, "--from", postgres_url, "--to", f"sqlite:///{back}")
    assert code == 0, err
    after = dump(back, names)
    assert after["requests"] == before["requests"] and after["attempts"] == before["attempts"]
    assert {row[0] for row in after["providers"]} == {"up", "more"}


async def test_a_target_with_rows_or_the_wrong_key_is_refused_and_left_as_it_was(
    tmp_path: Path,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "router.db"
    await installation(source)
    sqlite_url = f"sqlite:///{source}"
    assert (await copy(capsys, "--from", sqlite_url, "--to", postgres_url))[0] == 0
    names = await table_names(sqlite_url)
    before = dump(postgres_url, names)

    code, _, err = await copy(capsys, "--from", sqlite_url, "--to", postgres_url)
    assert code == 1
    assert "already holds rows" in err
    assert dump(postgres_url, names) == before

    monkeypatch.setenv("PROVIDER_ROUTER_SECRET_KEY", generate_key())
    other = tmp_path / "other.db"
    code, _, err = await copy(capsys, "--from", sqlite_url, "--to", f"sqlite:///{other}")
    assert code == 2
    assert "key" in err and SECRET not in err
    assert query(other, "SELECT count(*) FROM providers") == [(0,)]


async def test_bad_arguments_are_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await copy(capsys, "--from", "mysql://x/y", "--to", f"sqlite:///{tmp_path}/b.db")
    assert code == 1 and "--from 'mysql://x/y' is not a database URL" in err
    code, _, err = await copy(
        capsys, "--from", f"sqlite:///{tmp_path}/none.db", "--to", f"sqlite:///{tmp_path}/b.db"
    )
    assert code == 1 and "No database at" in err
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "b.db").exists()
