"""Delete or archive, restore, enable: the store's lifecycle functions on a real database file."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from router.errors import Conflict, NotFound
from router.store import catalog, lifecycle, links, providers
from router.store.db import Database
from router.store.version import config_version
from tests.helpers import query


def run(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return query(db, sql, params)


async def provider(db: Database, provider_id: str = "p", models: tuple[str, ...] = ("m",)) -> None:
    body = {"id": provider_id, "name": provider_id, "type": "openai",
            "config": {"baseURL": "http://p.test/v1", "apiKey": "sk-abcdefghijkl"}}  # fmt: skip
    await providers.create_provider(db, body)
    for model in models:
        await links.link_model(db, provider_id, {"model_id": model})


async def test_no_history_means_a_real_delete(db: Database) -> None:
    await provider(db)
    version = await config_version(db)
    result = await lifecycle.delete_provider(db, "p")
    assert result == {"id": "p", "deleted": True, "archived": False}
    for table in ("providers", "provider_configs", "provider_models"):
        assert run(db, f"SELECT count(*) FROM {table}") == [(0,)]
    assert run(db, "SELECT id FROM models") == [("m",)]
    assert await config_version(db) == version + 1


@pytest.mark.parametrize(
    "history",
    [
        "INSERT INTO requests (id, created_at, endpoint, provider_id, status, status_code,"
        " latency_ms) VALUES ('r', 1, '/v1/chat/completions', 'p', 'success', 200, 1)",
        # An attempt at p inside a request another provider answered.
        "INSERT INTO providers (id, name, type, created_at, updated_at) VALUES"
        " ('q', 'q', 'openai', 0, 0); INSERT INTO requests (id, created_at, endpoint,"
        " provider_id, status, status_code, latency_ms) VALUES ('r', 1, '/x', 'q', 'success',"
        " 200, 1); INSERT INTO attempts (request_id, n, provider_id, started_at, status,"
        " latency_ms) VALUES ('r', 1, 'p', 1, 'error', 1)",
        # Counters say it served requests whose rows are on their way.
        "UPDATE providers SET success_count = 1, last_used_at = 5 WHERE id = 'p'",
        "UPDATE providers SET error_count = 2 WHERE id = 'p'",
    ],
)
async def test_any_sign_of_history_archives(db: Database, history: str) -> None:
    await provider(db)
    query(db, history)
    result = await lifecycle.delete_provider(db, "p")
    assert result == {"id": "p", "deleted": False, "archived": True}
    assert run(db, "SELECT enabled, archived_at IS NOT NULL FROM providers WHERE id = 'p'") == [
        (0, 1)
    ]
    assert run(db, "SELECT provider_id FROM provider_models") == [("p",)]
    assert run(db, "SELECT count(*) FROM provider_configs") == [(2,)]


async def test_rows_still_queued_archive(db: Database) -> None:
    await provider(db)
    result = await lifecycle.delete_provider(db, "p", pending={"p"})
    assert result["archived"] is True
    # Once nothing is pending and no row arrived, deleting the archived provider removes it.
    assert (await lifecycle.delete_provider(db, "p"))["deleted"] is True
    assert run(db, "SELECT count(*) FROM providers") == [(0,)]


async def test_the_schema_refuses_to_drop_history() -> None:
    # The last line of defence: even a bare DELETE cannot orphan history rows.
    import tempfile
    from pathlib import Path

    from router.store.migrations import connect, migrate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.db"
        migrate(path)
        conn = connect(path)
        conn.execute("INSERT INTO providers (id, name, type, created_at, updated_at)"
                     " VALUES ('p', 'p', 'openai', 0, 0)")  # fmt: skip
        conn.execute(
            "INSERT INTO requests (id, created_at, endpoint, provider_id, status, status_code,"
            " latency_ms) VALUES ('r', 1, '/x', 'p', 'success', 200, 1)"
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM providers WHERE id = 'p'")
        conn.close()


async def test_restore_and_enable_rules(db: Database) -> None:
    await provider(db)
    with pytest.raises(Conflict):
        await lifecycle.restore_provider(db, "p")
    await lifecycle.delete_provider(db, "p", pending={"p"})
    with pytest.raises(Conflict) as caught:
        await lifecycle.set_enabled(db, "p", True)
    assert "/v1/providers/p/restore" in caught.value.message
    with pytest.raises(Conflict):  # nor through the partial update
        await providers.update_provider(db, "p", {"enabled": True, "description": "x"})
    shown = await providers.get_provider(db, "p")
    assert (shown["enabled"], shown["description"]) == (False, None)
    disabled = await lifecycle.set_enabled(db, "p", False)  # allowed: it is disabled already
    assert disabled["enabled"] is False
    restored = await lifecycle.restore_provider(db, "p")
    assert restored["archived_at"] is None and restored["enabled"] is True
    assert [m["model_id"] for m in restored["models"]] == ["m"]
    for call in (
        lifecycle.delete_provider(db, "ghost"),
        lifecycle.restore_provider(db, "ghost"),
        lifecycle.set_enabled(db, "ghost", True),
    ):
        with pytest.raises(NotFound):
            await call


async def test_models_archive_when_requests_name_them(db: Database) -> None:
    await provider(db, models=("used", "unused", "queued"))
    run(db, "INSERT INTO requests (id, created_at, endpoint, model, status, status_code,"
            " latency_ms) VALUES ('r', 1, '/x', 'used', 'error', 404, 1)")  # fmt: skip
    assert (await lifecycle.delete_model(db, "used"))["archived"] is True
    assert (await lifecycle.delete_model(db, "queued", pending={"queued"}))["archived"] is True
    assert (await lifecycle.delete_model(db, "unused"))["deleted"] is True
    assert run(db, "SELECT model_id FROM provider_models ORDER BY 1") == [("queued",), ("used",)]
    # Routing builds from model_ids: archived models are not in it, their links stay stored.
    assert (await catalog.load_catalog(db)).model_ids == frozenset()
    restored = await lifecycle.restore_model(db, "used")
    assert restored["archived_at"] is None
    assert (await catalog.load_catalog(db)).model_ids == {"used"}
    with pytest.raises(Conflict):
        await lifecycle.restore_model(db, "used")
    with pytest.raises(NotFound):
        await lifecycle.delete_model(db, "ghost")
