"""Refused client keys are counted per minute, source and key prefix, never one row each, and
an operator can read them back (GET /v1/auth-failures)."""

from __future__ import annotations

from pathlib import Path

import respx
from httpx import Response

from tests.helpers import ADMIN, add_provider, app_client, make_settings, query

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
ANSWER = {
    "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-test",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
}  # fmt: skip


async def test_refused_keys_are_counted_not_recorded_one_row_each(
    tmp_path: Path, upstreams: respx.MockRouter
) -> None:
    upstreams.post("http://upstream.test/v1/chat/completions").mock(
        return_value=Response(200, json=ANSWER)
    )
    settings = make_settings(tmp_path, require_client_keys=True)
    async with app_client(settings) as (app, client):
        await add_provider(client, "up", "http://upstream.test/v1", ["gpt-test"])
        created = await client.post("/v1/keys", json={"name": "ok"}, headers=ADMIN)
        key = created.json()["key"]
        wrong = {"authorization": "Bearer pr-wrongkey0123456789"}
        pasted = {"authorization": "Bearer sk-live-secret-from-elsewhere"}
        for _ in range(50):
            assert (
                await client.post("/v1/chat/completions", json=CHAT, headers=wrong)
            ).status_code == 401
        for _ in range(20):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 401
        for _ in range(5):
            assert (
                await client.post("/v1/embeddings", json=CHAT, headers=pasted)
            ).status_code == 401
        good = {"authorization": f"Bearer {key}"}
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=good)
        ).status_code == 200
        assert app.services is not None
        await app.services.recorder.flush()
        listed = (await client.get("/v1/auth-failures", headers=ADMIN)).json()
        page = (await client.get("/v1/auth-failures?limit=1", headers=ADMIN)).json()
        second = await client.get(
            f"/v1/auth-failures?limit=1&cursor={page['next_cursor']}", headers=ADMIN
        )
        bad = await client.get("/v1/auth-failures?colour=red", headers=ADMIN)
        anonymous = await client.get("/v1/auth-failures")

    database = tmp_path / "router.db"
    # Only the accepted request became a row.
    assert query(database, "SELECT status_code FROM requests") == [(200,)]
    groups = {(row["key_prefix"], row["endpoint"]): row["failures"] for row in listed["data"]}
    assert groups == {
        ("pr-wrongke", "chat.completions"): 50,
        ("(none)", "chat.completions"): 20,
        ("(other)", "embeddings"): 5,
    }
    assert {row["source"] for row in listed["data"]} == {"127.0.0.1"}
    assert all(row["first_at"] <= row["last_at"] for row in listed["data"])
    assert len(page["data"]) == 1 and page["next_cursor"]
    assert second.json()["data"][0] != page["data"][0]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "colour"
    assert anonymous.status_code == 401
    # No part of a secret pasted into the header is kept anywhere in the file.
    assert b"sk-live" not in database.read_bytes()
