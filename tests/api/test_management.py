"""The management API over HTTP, through the ASGI app with its lifespan and a real database file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from router.api import common
from router.app import create_app
from router.settings import Settings
from router.store import configs
from router.store.db import Database
from tests.helpers import ADMIN, add_provider, app_client, make_settings, query, serve_asgi

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
SECRET = "sk-upstream-abcdefgh1234"


def completion(text: str = "ok") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }  # fmt: skip


def catalog_state(settings: Settings) -> dict[str, Any]:
    tables = ("providers", "provider_configs", "models", "provider_models")
    state: dict[str, Any] = {t: query(settings, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    state["version"] = query(settings, "SELECT value FROM settings WHERE key = 'config_version'")
    return state


async def make(client: httpx.AsyncClient, provider_id: str = "up", **fields: Any) -> None:
    config = {"baseURL": f"http://{provider_id}.test/v1", "apiKey": SECRET}
    await add_provider(client, provider_id, f"http://{provider_id}.test/v1", ["gpt-test"],
                       config=config, **fields)  # fmt: skip


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"].endswith(".")
    if param is not None:
        assert error["param"] == param


# -- providers -----------------------------------------------------------------------------------


async def test_list_filters_by_type_enabled_and_archived(client: httpx.AsyncClient) -> None:
    await make(client, "a", priority=1)
    await make(client, "b", priority=5)
    body = {"name": "lm", "type": "lm-studio", "enabled": False, "config": {}}
    assert (await client.post("/v1/providers", json=body, headers=ADMIN)).status_code == 201

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["data"]]

    assert ids(await client.get("/v1/providers", headers=ADMIN)) == ["b", "a", "lm"]
    assert ids(await client.get("/v1/providers?type=openai", headers=ADMIN)) == ["b", "a"]
    assert ids(await client.get("/v1/providers?enabled=false", headers=ADMIN)) == ["lm"]
    assert ids(await client.get("/v1/providers?archived=true", headers=ADMIN)) == []
    await client.delete("/v1/providers/a", headers=ADMIN)
    # "a" had no history, so it is gone for good.
    assert ids(await client.get("/v1/providers?archived=false", headers=ADMIN)) == ["b", "lm"]
    bad = await client.get("/v1/providers?enabled=maybe", headers=ADMIN)
    assert_error(bad, 400, "enabled")
    assert_error(await client.get("/v1/providers?color=red", headers=ADMIN), 400, "color")


async def test_a_provider_shows_state_links_and_masked_config(client: httpx.AsyncClient) -> None:
    await make(client)
    body = (await client.get("/v1/providers/up", headers=ADMIN)).json()
    assert body["config"] == {"apiKey": "****1234", "baseURL": "http://up.test/v1"}
    assert [m["model_id"] for m in body["models"]] == ["gpt-test"]
    assert body["available"] is True
    assert set(body["state"]) >= {
        "last_used_at", "last_error_at", "success_count", "error_count", "last_health_check",
    }  # fmt: skip
    assert SECRET not in (await client.get("/v1/providers", headers=ADMIN)).text


async def test_disable_and_enable_change_routing_at_once(
    client: httpx.AsyncClient, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
    await make(client)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200

    disabled = await client.post("/v1/providers/up/disable", headers=ADMIN)
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 503

    enabled = await client.post("/v1/providers/up/enable", headers=ADMIN)
    assert enabled.json()["enabled"] is True
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert_error(await client.post("/v1/providers/nope/enable", headers=ADMIN), 404)


async def test_test_calls_the_upstream_and_reports(
    client: httpx.AsyncClient, upstreams: respx.MockRouter
) -> None:
    upstreams.get("http://up.test/v1/models").respond(json={"object": "list", "data": []})
    upstreams.get("http://down.test/v1/models").respond(status_code=401, json={"error": {}})
    await make(client)
    await make(client, "down")
    ok = (await client.post("/v1/providers/up/test", headers=ADMIN)).json()
    assert ok["ok"] is True and ok["status_code"] == 200 and ok["latency_ms"] >= 0
    failed = (await client.post("/v1/providers/down/test", headers=ADMIN)).json()
    assert failed["ok"] is False and failed["status_code"] == 401
    assert SECRET not in str(failed)
    assert_error(await client.post("/v1/providers/nope/test", headers=ADMIN), 404)


async def test_test_works_for_an_archived_provider_too(
    settings: Settings, upstreams: respx.MockRouter
) -> None:
    upstreams.get("http://up.test/v1/models").respond(json={"object": "list", "data": []})
    async with app_client(settings) as (app, client):
        await make(client)
        rows_before = query(settings, "SELECT count(*) FROM providers")
        # Archive by hand (history would do it): the snapshot holds no adapter for it then.
        query(settings, "UPDATE providers SET archived_at = 1, enabled = 0")
        await app.services.snapshots.rebuild()  # type: ignore[union-attr]
        assert app.services.snapshots.adapter("up") is None  # type: ignore[union-attr]
        ok = (await client.post("/v1/providers/up/test", headers=ADMIN)).json()
    assert ok["ok"] is True
    assert query(settings, "SELECT count(*) FROM providers") == rows_before


async def test_reload_gives_the_provider_a_fresh_adapter(settings: Settings) -> None:
    async with app_client(settings) as (app, client):
        await make(client)
        services = app.services
        assert services is not None
        before = services.snapshots.adapter("up")
        reloaded = await client.post("/v1/providers/up/reload", headers=ADMIN)
        after = services.snapshots.adapter("up")
        assert reloaded.status_code == 200
        assert reloaded.json()["reloaded"] is True
        assert before is not None and after is not None and before is not after
        assert_error(await client.post("/v1/providers/nope/reload", headers=ADMIN), 404)


# -- archiving -----------------------------------------------------------------------------------


async def test_delete_without_history_removes_rows(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await make(client)
    deleted = await client.delete("/v1/providers/up", headers=ADMIN)
    assert deleted.json() == {"id": "up", "deleted": True, "archived": False}
    assert query(settings, "SELECT count(*) FROM providers") == [(0,)]
    assert query(settings, "SELECT count(*) FROM provider_configs") == [(0,)]
    assert query(settings, "SELECT count(*) FROM provider_models") == [(0,)]
    assert_error(await client.get("/v1/providers/up", headers=ADMIN), 404)
    assert_error(await client.delete("/v1/providers/up", headers=ADMIN), 404)


async def test_delete_with_history_archives_and_restore_brings_it_back(
    client: httpx.AsyncClient, settings: Settings, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
    await make(client)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200

    deleted = await client.delete("/v1/providers/up", headers=ADMIN)
    assert deleted.json() == {"id": "up", "deleted": False, "archived": True}
    shown = (await client.get("/v1/providers/up", headers=ADMIN)).json()
    assert shown["archived_at"] is not None and shown["enabled"] is False
    assert [m["model_id"] for m in shown["models"]] == ["gpt-test"]
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code in (404, 503)
    history = (await client.get("/v1/requests?provider_id=up", headers=ADMIN)).json()["data"]
    assert len(history) == 1
    assert_error(await client.post("/v1/providers/up/enable", headers=ADMIN), 409)
    assert query(settings, "SELECT count(*) FROM requests WHERE provider_id = 'up'") == [(1,)]

    restored = await client.post("/v1/providers/up/restore", headers=ADMIN)
    assert restored.status_code == 200
    assert restored.json()["archived_at"] is None and restored.json()["enabled"] is True
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert_error(await client.post("/v1/providers/up/restore", headers=ADMIN), 409)


async def test_delete_while_records_are_still_queued_archives_and_keeps_them(
    tmp_path: Path, upstreams: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "RECORDER_WAIT_S", 0.1)
    # A recorder that holds its rows for a minute: when the provider is deleted the request's
    # row is not written yet. Deleting the provider would make that row impossible to write.
    settings = make_settings(tmp_path, recorder_flush_interval_ms=60_000)
    upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
    async with app_client(settings) as (app, client):
        await make(client)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert app.services is not None and app.services.recorder.queue.qsize() == 1
        assert query(settings, "SELECT count(*) FROM requests") == [(0,)]
        deleted = await client.delete("/v1/providers/up", headers=ADMIN)
        assert deleted.json() == {"id": "up", "deleted": False, "archived": True}
    # Shutdown wrote the queued row; its provider is still there, archived.
    assert query(settings, "SELECT provider_id, status FROM requests") == [("up", "success")]
    assert query(settings, "SELECT provider_id FROM attempts") == [("up",)]
    assert query(settings, "SELECT archived_at IS NOT NULL FROM providers") == [(1,)]


async def test_models_archive_with_history_and_delete_without(
    client: httpx.AsyncClient, settings: Settings, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
    await make(client)
    await client.post("/v1/providers/up/models", json={"model_id": "unused"}, headers=ADMIN)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200

    gone = await client.delete("/v1/models/unused", headers=ADMIN)
    assert gone.json() == {"id": "unused", "deleted": True, "archived": False}
    assert query(settings, "SELECT model_id FROM provider_models") == [("gpt-test",)]

    kept = await client.delete("/v1/models/gpt-test", headers=ADMIN)
    assert kept.json() == {"id": "gpt-test", "deleted": False, "archived": True}
    assert query(settings, "SELECT model_id FROM provider_models") == [("gpt-test",)]
    listed = (await client.get("/v1/models")).json()["data"]
    assert [m["id"] for m in listed] == []
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 404

    restored = await client.post("/v1/models/gpt-test/restore", headers=ADMIN)
    assert restored.status_code == 200 and restored.json()["archived_at"] is None
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert_error(await client.post("/v1/models/gpt-test/restore", headers=ADMIN), 409)
    assert_error(await client.delete("/v1/models/nope", headers=ADMIN), 404)


# -- config --------------------------------------------------------------------------------------


async def test_config_get_put_patch_delete(settings: Settings) -> None:
    async with app_client(settings) as (app, client):
        assert app.services is not None
        await config_round_trip(client, app.services.db)


async def config_round_trip(client: httpx.AsyncClient, db: Database) -> None:
    await make(client)
    got = (await client.get("/v1/providers/up/config", headers=ADMIN)).json()
    assert got == {"provider_id": "up",
                   "config": {"apiKey": "****1234", "baseURL": "http://up.test/v1"}}  # fmt: skip

    # The masked form sent back keeps the secret; a key left out is removed.
    put = await client.put(
        "/v1/providers/up/config",
        json={"config": {"apiKey": "****1234", "baseURL": "http://new.test/v1", "timeout": 500}},
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text
    assert put.json()["config"] == {
        "apiKey": "****1234", "baseURL": "http://new.test/v1", "timeout": 500,
    }  # fmt: skip
    assert (await configs.provider_config(db, "up"))["apiKey"] == SECRET

    patched = await client.patch(
        "/v1/providers/up/config/timeout", json={"value": 900}, headers=ADMIN
    )
    assert patched.json()["config"]["timeout"] == 900
    masked = await client.patch(
        "/v1/providers/up/config/apiKey", json={"value": "****1234"}, headers=ADMIN
    )
    assert masked.status_code == 200
    assert (await configs.provider_config(db, "up"))["apiKey"] == SECRET

    removed = await client.delete("/v1/providers/up/config/timeout", headers=ADMIN)
    assert "timeout" not in removed.json()["config"]
    put_short = await client.put(
        "/v1/providers/up/config", json={"config": {"baseURL": "http://x.test/v1"}}, headers=ADMIN
    )
    assert put_short.json()["config"] == {"baseURL": "http://x.test/v1"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("PUT", "/v1/providers/up/config", {"config": {"apiKey": "k"}}, 400, "config"),
        ("PUT", "/v1/providers/up/config", {"config": {"nope": 1}}, 400, "config"),
        ("PUT", "/v1/providers/up/config", {"config": []}, 400, "config"),
        ("PUT", "/v1/providers/up/config", {}, 400, "config"),
        ("PUT", "/v1/providers/up/config", {"config": {}, "x": 1}, 400, "x"),
        ("PUT", "/v1/providers/nope/config", {"config": {}}, 404, None),
        ("PATCH", "/v1/providers/up/config/timeout", {"value": "slow"}, 400, "config"),
        ("PATCH", "/v1/providers/up/config/nope", {"value": 1}, 400, "config"),
        ("PATCH", "/v1/providers/up/config/timeout", {}, 400, "value"),
        ("PATCH", "/v1/providers/up/config/baseURL", {"value": "ftp://x"}, 400, "config"),
        ("PATCH", "/v1/providers/up/config/apiKey", {"value": "k", "is_sensitive": False},
         400, "is_sensitive"),
        ("PATCH", "/v1/providers/up/config/timeout", {"value": 5, "is_sensitive": True},
         400, "is_sensitive"),
        ("DELETE", "/v1/providers/up/config/baseURL", None, 400, "key"),
        ("DELETE", "/v1/providers/up/config/timeout", None, 404, "key"),
    ],
)  # fmt: skip
async def test_bad_config_writes_change_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    method: str,
    path: str,
    body: Any,
    status: int,
    param: str | None,
) -> None:
    await make(client)
    before = catalog_state(settings)
    response = await client.request(method, path, json=body, headers=ADMIN)
    assert_error(response, status, param)
    assert catalog_state(settings) == before


# -- models and links ----------------------------------------------------------------------------


async def test_model_update_and_openai_list(client: httpx.AsyncClient) -> None:
    await make(client)
    updated = await client.put(
        "/v1/models/gpt-test",
        json={"name": "GPT test", "capabilities": ["chat", "tools"]},
        headers=ADMIN,
    )
    assert updated.status_code == 200
    assert updated.json()["name"] == "GPT test"
    assert updated.json()["capabilities"] == ["chat", "tools"]
    assert_error(await client.put("/v1/models/gpt-test", json={"id": "x"}, headers=ADMIN), 400)
    assert_error(await client.put("/v1/models/nope", json={}, headers=ADMIN), 404)
    bad = await client.put("/v1/models/gpt-test", json={"capabilities": "chat"}, headers=ADMIN)
    assert_error(bad, 400, "capabilities")


async def test_unlink_and_default(client: httpx.AsyncClient, settings: Settings) -> None:
    await make(client)
    await client.post("/v1/providers/up/models", json={"model_id": "org/m2"}, headers=ADMIN)
    default = await client.put("/v1/providers/up/models/org/m2/default", headers=ADMIN)
    assert default.status_code == 200
    assert [(m["model_id"], m["is_default"]) for m in default.json()["data"]] == [
        ("gpt-test", False), ("org/m2", True),
    ]  # fmt: skip
    unlinked = await client.delete("/v1/providers/up/models/org/m2", headers=ADMIN)
    assert unlinked.json() == {"provider_id": "up", "model_id": "org/m2", "deleted": True}
    assert query(settings, "SELECT model_id FROM provider_models") == [("gpt-test",)]
    assert query(settings, "SELECT id FROM models ORDER BY id") == [
        ("gpt-test",),
        ("org/m2",),
    ]
    before = catalog_state(settings)
    assert_error(await client.delete("/v1/providers/up/models/org/m2", headers=ADMIN), 404)
    assert_error(await client.put("/v1/providers/up/models/zz/default", headers=ADMIN), 404)
    assert_error(await client.delete("/v1/providers/no/models/gpt-test", headers=ADMIN), 404)
    assert catalog_state(settings) == before


async def test_the_openai_sdk_lists_models(tmp_path: Path) -> None:
    import openai

    app = create_app(make_settings(tmp_path))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as client:
        await make(client)
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        page = await sdk.models.list()
        await sdk.close()
    assert [m.id for m in page.data] == ["gpt-test"]
    assert page.data[0].object == "model"


async def test_management_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("DELETE", "/v1/providers/x"),
        ("GET", "/v1/providers/x/config"),
        ("GET", "/v1/stats"),
        ("PUT", "/v1/models/x"),
    ):
        response = await client.request(method, path)
        assert_error(response, 401)


async def test_a_provider_whose_type_is_gone_is_shown_unavailable_and_skipped(
    settings: Settings, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
    async with app_client(settings) as (app, client):
        await make(client)
        await make(client, "gone", priority=9)
        # As if the package that provided its type was uninstalled.
        query(settings, "UPDATE providers SET type = 'uninstalled-type' WHERE id = 'gone'")
        assert app.services is not None
        await app.services.snapshots.rebuild()
        shown = (await client.get("/v1/providers/gone", headers=ADMIN)).json()
        assert shown["available"] is False
        assert shown["config"]["apiKey"] == "****1234"
        answer = await client.post("/v1/chat/completions", json=CHAT)
        assert answer.headers["x-provider-router-provider"] == "up"
        assert_error(await client.post("/v1/providers/gone/test", headers=ADMIN), 400, "type")
    assert query(settings, "SELECT id FROM providers ORDER BY id") == [
        ("gone",),
        ("up",),
    ]


async def test_the_provider_list_pages_with_a_cursor(client: httpx.AsyncClient) -> None:
    for provider_id, priority in (("a", 1), ("b", 5), ("c", 1), ("d", 0)):
        await make(client, provider_id, priority=priority)
    first = (await client.get("/v1/providers?limit=2", headers=ADMIN)).json()
    assert [p["id"] for p in first["data"]] == ["b", "a"]
    await make(client, "0a", priority=1)  # sorts before the cursor: not on the next page
    cursor = first["next_cursor"]
    second = (await client.get(f"/v1/providers?limit=2&cursor={cursor}", headers=ADMIN)).json()
    assert [p["id"] for p in second["data"]] == ["c", "d"]
    assert second["next_cursor"] is None
    bad = await client.get("/v1/providers?cursor=bm9wZQ", headers=ADMIN)
    assert_error(bad, 400, "cursor")
    assert_error(await client.get("/v1/providers?limit=0", headers=ADMIN), 400, "limit")


async def test_a_method_the_path_does_not_have_is_a_405_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    response = await client.patch("/v1/providers", headers=ADMIN)
    assert response.status_code == 405
    assert response.headers["allow"]
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"  # the caller's mistake, not a server_error
    assert set(error) == {"message", "type", "param", "code"}


async def test_a_management_body_over_the_limit_is_a_413_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with app_client(make_settings(tmp_path, max_body_bytes=1024)) as (_, client):
        body = {"name": "big", "type": "openai", "description": "x" * 2000,
                "config": {"baseURL": "http://big.test/v1"}}  # fmt: skip
        response = await client.post("/v1/providers", json=body, headers=ADMIN)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        assert (await client.get("/v1/providers", headers=ADMIN)).json()["data"] == []
