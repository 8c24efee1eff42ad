"""Client keys: the management API and CLI, and every 401/403 path on the client endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from router.app import ProviderRouterApp
from router.cli.main import main
from router.settings import Settings
from tests.helpers import ADMIN, ADMIN_TOKEN, add_provider, app_client, eventually, make_settings

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
async def proxy(
    settings: Settings, upstreams: respx.MockRouter
) -> AsyncIterator[tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route]]:
    """The app with one provider serving gpt-test and other-model, and its upstream route."""
    route = upstreams.post("http://upstream.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=COMPLETION)
    )
    async with app_client(settings) as (app, client):
        await add_provider(client, "up", "http://upstream.test/v1", ["gpt-test", "other-model"])
        yield app, client, route


async def create_key(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/keys", json={"name": "ci", **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


# -- the management API ------------------------------------------------------------------------


async def test_a_new_key_is_shown_once_and_stored_only_as_a_hash(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route], settings: Settings
) -> None:
    _, client, _ = proxy
    created = await create_key(client, rpm_limit=60, tpm_limit=1000, models=["gpt-test"])
    key = created.pop("key")
    assert key.startswith("pr-") and len(key) > 40
    assert created["prefix"] == key[:10]
    assert created["rpm_limit"] == 60 and created["tpm_limit"] == 1000
    assert created["models"] == ["gpt-test"] and created["enabled"] is True
    listed = (await client.get("/v1/keys", headers=ADMIN)).json()
    assert listed == {"data": [created], "next_cursor": None}
    one = await client.get(f"/v1/keys/{created['id']}", headers=ADMIN)
    assert one.json() == created
    assert key not in listed.__repr__() and key not in one.text
    with sqlite3.connect(settings.database_path) as conn:
        [(stored_hash,)] = conn.execute("SELECT hash FROM api_keys")
    assert stored_hash == hashlib.sha256(key.encode()).hexdigest()


async def test_keys_list_pages_with_a_cursor(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, _ = proxy
    ids = sorted([(await create_key(client, name=f"k{n}"))["id"] for n in range(3)])
    first = (await client.get("/v1/keys?limit=2", headers=ADMIN)).json()
    assert [k["id"] for k in first["data"]] == ids[:2] and first["next_cursor"] == ids[1]
    second = await client.get(f"/v1/keys?limit=2&cursor={first['next_cursor']}", headers=ADMIN)
    assert [k["id"] for k in second.json()["data"]] == ids[2:]
    assert second.json()["next_cursor"] is None
    assert_openai_error(await client.get("/v1/keys?limit=0", headers=ADMIN), 400, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "x", "rpm_limit": 0}, "rpm_limit"),
        ({"name": "x", "tpm_limit": "many"}, "tpm_limit"),
        ({"name": "x", "models": []}, "models"),
        ({"name": "x", "models": "gpt-test"}, "models"),
        ({"name": "x", "expires_at": 1}, "expires_at"),
        ({"name": "x", "key": "pr-chosen-by-me"}, None),
    ],
)
async def test_a_bad_key_request_is_400_and_creates_nothing(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
    body: dict[str, Any],
    param: str | None,
) -> None:
    _, client, _ = proxy
    response = await client.post("/v1/keys", json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    if param is not None:
        assert response.json()["error"]["param"] == param
    assert (await client.get("/v1/keys", headers=ADMIN)).json()["data"] == []


async def test_key_management_needs_the_admin_token(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, _ = proxy
    created = await create_key(client)
    for method, path in (
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", f"/v1/keys/{created['id']}"),
        ("DELETE", f"/v1/keys/{created['id']}"),
    ):
        for headers in ({}, bearer(created["key"]), bearer("wrong-token-123")):
            response = await client.request(method, path, json={"name": "x"}, headers=headers)
            assert_openai_error(response, 401, "invalid_api_key")
    assert (await client.get(f"/v1/keys/{created['id']}", headers=ADMIN)).json()["enabled"]


async def test_the_admin_token_works_as_a_bearer_token_and_as_x_api_key(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, _ = proxy
    created = await create_key(client)
    as_bearer = await client.get("/v1/providers", headers=bearer(ADMIN_TOKEN))
    as_api_key = await client.get("/v1/providers", headers={"x-api-key": ADMIN_TOKEN})
    written = await client.post("/v1/keys", json={"name": "x"}, headers={"x-api-key": ADMIN_TOKEN})
    wrong = await client.get("/v1/providers", headers={"x-api-key": "wrong-token-123"})
    client_key = await client.get("/v1/providers", headers={"x-api-key": created["key"]})
    missing = await client.get("/v1/providers")
    # With both headers the bearer token is the one checked, as on the client endpoints.
    both = await client.get(
        "/v1/providers", headers={**bearer("wrong-token-123"), "x-api-key": ADMIN_TOKEN}
    )

    assert as_bearer.status_code == 200 and as_api_key.status_code == 200
    assert as_api_key.json() == as_bearer.json()
    assert written.status_code == 201
    assert assert_openai_error(wrong, 401, "invalid_api_key")["message"] == (
        "The admin token is not valid."
    )
    assert_openai_error(client_key, 401, "invalid_api_key")
    assert "x-api-key" in assert_openai_error(missing, 401, "invalid_api_key")["message"]
    assert_openai_error(both, 401, "invalid_api_key")


async def test_an_unknown_key_id_is_404(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, _ = proxy
    assert_openai_error(await client.delete("/v1/keys/key_nope", headers=ADMIN), 404, "not_found")


# -- the client endpoints ----------------------------------------------------------------------


async def test_before_any_key_exists_the_proxy_is_open(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, route = proxy
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    response = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("anything"))
    assert response.status_code == 200
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-upstream-up"


async def test_once_a_key_exists_every_client_call_needs_one(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, route = proxy
    key = (await create_key(client))["key"]
    for path, body in (
        ("/v1/chat/completions", CHAT),
        ("/v1/embeddings", {"model": "gpt-test", "input": "x"}),
        ("/chat/completions", CHAT),
    ):
        missing = assert_openai_error(await client.post(path, json=body), 401, "invalid_api_key")
        assert "Authorization: Bearer" in missing["message"]
        wrong = await client.post(path, json=body, headers=bearer("pr-not-a-real-key-000"))
        assert_openai_error(wrong, 401, "invalid_api_key")
        basic = await client.post(path, json=body, headers={"authorization": f"Basic {key}"})
        assert_openai_error(basic, 401, "invalid_api_key")
    assert route.call_count == 0
    ok = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert ok.status_code == 200
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-upstream-up"
    admin = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
    assert admin.status_code == 200


async def test_revoked_expired_and_unknown_keys_get_the_same_answer(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route], settings: Settings
) -> None:
    app, client, route = proxy
    revoked = await create_key(client, name="revoked")
    expired = await create_key(client, name="expired")
    assert (
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(revoked["key"]))
    ).status_code == 200
    response = await client.delete(f"/v1/keys/{revoked['id']}", headers=ADMIN)
    assert response.status_code == 200 and response.json()["revoked_at"] is not None
    assert response.json()["enabled"] is False
    assert app.services is not None
    await app.services.db.execute_write(
        "UPDATE api_keys SET expires_at = 1 WHERE id = ?", (expired["id"],)
    )
    await app.services.auth.reload(app.services.db)
    calls = route.call_count
    answers = [
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        for key in (revoked["key"], expired["key"], "pr-" + "x" * 43)
    ]
    bodies = {a.content for a in answers}
    assert [a.status_code for a in answers] == [401, 401, 401] and len(bodies) == 1
    assert route.call_count == calls


async def test_require_client_keys_closes_the_proxy_before_any_key_exists(
    tmp_path: Path, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://upstream.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=COMPLETION)
    )
    settings = make_settings(tmp_path, require_client_keys=True)
    async with app_client(settings) as (_, client):
        await add_provider(client, "up", "http://upstream.test/v1", ["gpt-test"])
        assert_openai_error(
            await client.post("/v1/chat/completions", json=CHAT), 401, "invalid_api_key"
        )
        ok = await client.post("/v1/chat/completions", json=CHAT, headers=ADMIN)
        assert ok.status_code == 200


async def test_a_key_limited_to_models_gets_403_for_others(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    app, client, route = proxy
    created = await create_key(client, models=["gpt-test"])
    denied = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "other-model"},
        headers=bearer(created["key"]),
    )
    error = assert_openai_error(denied, 403, "model_denied")
    assert error["type"] == "permission_error" and "other-model" in error["message"]
    embed = {"model": "other-model", "input": "x"}
    denied_embeddings = await client.post(
        "/v1/embeddings", json=embed, headers=bearer(created["key"])
    )
    assert_openai_error(denied_embeddings, 403, "model_denied")
    assert route.call_count == 0
    allowed = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(created["key"]))
    assert allowed.status_code == 200
    assert app.services is not None
    await app.services.recorder.flush()
    rows = (await client.get("/v1/requests", headers=ADMIN)).json()["data"]
    assert {(r["status_code"], r["model"]) for r in rows} == {
        (403, "other-model"),
        (200, "gpt-test"),
    }


async def test_the_model_list_needs_a_key_and_shows_a_limited_key_only_its_models(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
) -> None:
    _, client, _ = proxy
    assert (await client.get("/v1/models")).status_code == 200  # open while no key exists
    limited = await create_key(client, models=["gpt-test"])
    everything = await create_key(client)

    def ids(response: httpx.Response) -> set[str]:
        assert response.status_code == 200, response.text
        return {m["id"] for m in response.json()["data"]}

    assert_openai_error(await client.get("/v1/models"), 401, "invalid_api_key")
    assert_openai_error(
        await client.get("/v1/models", headers=bearer("pr-not-a-key")), 401, "invalid_api_key"
    )
    assert ids(await client.get("/v1/models", headers=bearer(limited["key"]))) == {"gpt-test"}
    both = {"gpt-test", "other-model"}
    assert ids(await client.get("/v1/models", headers=bearer(everything["key"]))) == both
    assert ids(await client.get("/v1/models", headers=ADMIN)) == both


async def test_the_authenticated_key_and_its_limits_reach_the_request_record(
    proxy: tuple[ProviderRouterApp, httpx.AsyncClient, respx.Route],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, client, _ = proxy
    created = await create_key(client, rpm_limit=7, tpm_limit=70)
    assert app.services is not None
    recorder = app.services.recorder
    seen: list[Any] = []
    original = recorder.record

    async def spy(record: Any) -> None:
        seen.append(record)
        await original(record)

    monkeypatch.setattr(recorder, "record", spy)
    await client.post("/v1/chat/completions", json=CHAT, headers=bearer(created["key"]))
    [record] = seen
    assert record.client_key_id == created["id"]
    assert (record.client_key.rpm_limit, record.client_key.tpm_limit) == (7, 70)


async def test_last_used_at_is_written_in_batches_not_per_request(
    tmp_path: Path, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://upstream.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=COMPLETION)
    )
    settings = make_settings(tmp_path, reload_interval_ms=600_000)
    async with app_client(settings) as (app, client):
        await add_provider(client, "up", "http://upstream.test/v1", ["gpt-test"])
        created = await create_key(client)
        for _ in range(3):
            response = await client.post(
                "/v1/chat/completions", json=CHAT, headers=bearer(created["key"])
            )
            assert response.status_code == 200
        with sqlite3.connect(settings.database_path) as conn:
            assert conn.execute("SELECT last_used_at FROM api_keys").fetchone() == (None,)
        assert app.services is not None
        await app.services.auth.flush_last_used(app.services.db)
        used = (await client.get(f"/v1/keys/{created['id']}", headers=ADMIN)).json()
        assert used["last_used_at"] >= created["created_at"]


async def test_a_key_revoked_in_one_server_is_refused_by_another_within_a_second(
    tmp_path: Path, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://upstream.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=COMPLETION)
    )
    settings = make_settings(tmp_path)
    async with app_client(settings) as (_, first), app_client(settings) as (_, second):
        await add_provider(first, "up", "http://upstream.test/v1", ["gpt-test"])
        created = await create_key(first)
        headers = bearer(created["key"])

        async def second_answers(status: int) -> bool:
            response = await second.post("/v1/chat/completions", json=CHAT, headers=headers)
            return response.status_code == status

        # The other server reloads within reload_interval_ms (100 ms here).
        await eventually(lambda: second_answers(200), "the second server accepts the new key")
        assert (await first.delete(f"/v1/keys/{created['id']}", headers=ADMIN)).status_code == 200
        assert (
            await first.post("/v1/chat/completions", json=CHAT, headers=headers)
        ).status_code == 401
        await eventually(lambda: second_answers(401), "the second server refuses the revoked key")


# -- the CLI -----------------------------------------------------------------------------------


async def test_cli_keys_create_list_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_settings(tmp_path).database_url
    create = ["keys", "create", "--name", "cli", "--rpm-limit", "5", "--model", "a", "--model", "b"]
    assert await asyncio.to_thread(main, [*create, "--database", url]) == 0
    out = capsys.readouterr().out
    key = out.strip().splitlines()[-1]
    assert key.startswith("pr-") and "shown only now" in out
    assert await asyncio.to_thread(main, ["keys", "list", "--database", url]) == 0
    listing = capsys.readouterr().out
    assert key[:10] in listing and key not in listing and "active" in listing
    header, row = listing.splitlines()
    assert header.split()[:7] == ["ID", "PREFIX", "STATE", "NAME", "MODELS", "RPM", "TPM"]
    assert row.split()[4:6] == ["a,b", "5"]
    key_id = row.split()[0]
    assert await asyncio.to_thread(main, ["keys", "revoke", key_id, "--database", url]) == 0
    assert "Revoked" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["keys", "list", "--database", url]) == 0
    assert "revoked" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["keys", "revoke", "key_nope", "--database", url]) == 1
    assert "No client key" in capsys.readouterr().err


async def test_cli_keys_speak_json_for_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_settings(tmp_path).database_url
    create = ["keys", "create", "--name", "ci", "--model", "a", "--json", "--database", url]
    assert await asyncio.to_thread(main, create) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith("pr-") and created["models"] == ["a"]
    assert await asyncio.to_thread(main, ["keys", "list", "--json", "--database", url]) == 0
    listed = capsys.readouterr().out
    assert created["key"] not in listed
    assert [k["id"] for k in json.loads(listed)["data"]] == [created["id"]]
    revoke = ["keys", "revoke", created["id"], "--json", "--database", url]
    assert await asyncio.to_thread(main, revoke) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
