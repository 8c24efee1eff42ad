"""``GET /v1/models/{id}``: OpenAI's model object for clients, the management detail for the
admin token, both through the openai SDK over a real socket."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import httpx
import openai
import pytest

from router.app import create_app
from tests.helpers import ADMIN, ADMIN_TOKEN, add_provider, make_settings, serve_asgi


async def test_models_retrieve_answers_clients_and_the_admin_over_a_socket(
    tmp_path: Path,
) -> None:
    async with serve_asgi(create_app(make_settings(tmp_path))) as url:
        async with httpx.AsyncClient(base_url=url) as admin:
            await add_provider(admin, "up", "http://127.0.0.1:9/v1", ["gpt-test", "other"])
            made = await admin.post("/v1/keys", json={"name": "sdk"}, headers=ADMIN)
            limited = await admin.post(
                "/v1/keys", json={"name": "narrow", "models": ["other"]}, headers=ADMIN
            )
        key, narrow_key = made.json()["key"], limited.json()["key"]

        stack = contextlib.AsyncExitStack()
        sdk = functools.partial(openai.AsyncOpenAI, base_url=f"{url}/v1", max_retries=0)
        client = await stack.enter_async_context(sdk(api_key=key))
        model = await client.models.retrieve("gpt-test")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("no-such-model")
        narrow = await stack.enter_async_context(sdk(api_key=narrow_key))
        with pytest.raises(openai.NotFoundError):
            await narrow.models.retrieve("gpt-test")  # not a model this key may ask for
        assert (await narrow.models.retrieve("other")).id == "other"
        stranger = await stack.enter_async_context(sdk(api_key="sk-nope"))
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.retrieve("gpt-test")
        boss = await stack.enter_async_context(sdk(api_key=ADMIN_TOKEN))
        detail = await boss.models.retrieve("gpt-test")
        await stack.aclose()
        async with httpx.AsyncClient(base_url=url) as raw:
            plain = (
                await raw.get("/v1/models/gpt-test", headers={"authorization": f"Bearer {key}"})
            ).json()

    assert (model.id, model.object, model.owned_by) == ("gpt-test", "model", "provider-router")
    assert model.created > 1_600_000_000  # Unix seconds, as OpenAI's
    assert set(plain) == {"id", "object", "created", "owned_by"}  # nothing of the management view
    assert missing.value.body is not None and missing.value.code == "model_not_found"
    # The admin token gets the management detail, which is still a valid model object.
    assert (detail.id, detail.object, detail.created) == ("gpt-test", "model", model.created)
    extra = detail.model_extra or {}
    assert {"name", "description", "capabilities", "updated_at"} <= set(extra)
    assert extra["archived_at"] is None


async def test_an_anthropic_client_gets_anthropics_model_object(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as client:
        await add_provider(client, "up", "http://127.0.0.1:9/v1", ["claude-x"])
        headers = {"x-api-key": "anything", "anthropic-version": "2023-06-01"}
        found = await client.get("/v1/models/claude-x", headers=headers)
        missing = await client.get("/v1/models/nope", headers=headers)
    assert found.status_code == 200
    assert found.json()["type"] == "model" and found.json()["id"] == "claude-x"
    assert found.json()["created_at"].endswith("Z")
    assert missing.status_code == 404 and missing.json()["type"] == "error"
