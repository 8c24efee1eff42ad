"""The catalog service: providers, their config, models and links, checked before any write.

What a caller sees is the returned dict or the error (class, message, param); what is stored is
read back from the SQLite file with plain ``sqlite3``.
"""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import Conflict, InvalidRequest, NotFound
from router.secrets import Cipher, generate_key
from router.store import catalog, configs, links, models, providers, version
from router.store.credentials import rotate_key
from router.store.db import Database
from tests.helpers import query, stored_bytes

SECRET = "sk-abcdefghijklmnop"
TABLES = ("providers", "provider_configs", "models", "provider_models")


def openai_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Main OpenAI",
        "type": "openai",
        "config": {"baseURL": "https://api.example.com/v1", "apiKey": SECRET},
    }
    body.update(fields)
    return body


def stored_config(db: Database, provider_id: str) -> dict[str, tuple[str, int]]:
    rows = query(
        db,
        "SELECT key, value, is_sensitive FROM provider_configs WHERE provider_id = ?",
        (provider_id,),
    )
    return {key: (value, sensitive) for key, value, sensitive in rows}


def config_version(db: Database) -> int:
    [(value,)] = query(db, "SELECT value FROM settings WHERE key = 'config_version'")
    return int(value)


def snapshot(db: Database) -> dict[str, Any]:
    """Every catalog row plus the config version: equal before and after a refused write."""
    state: dict[str, Any] = {t: query(db, f"SELECT * FROM {t} ORDER BY 1, 2") for t in TABLES}
    state["config_version"] = config_version(db)
    return state


# -- create_provider -----------------------------------------------------------------------------


async def test_create_provider_returns_it_with_a_slug_id_and_masked_config(db: Database) -> None:
    provider = await providers.create_provider(db, openai_body(name="My Main  OpenAI!"))
    assert provider["id"] == "my-main-openai"
    assert provider["name"] == "My Main  OpenAI!"
    assert provider["type"] == "openai"
    assert provider["enabled"] is True
    assert provider["priority"] == 0
    assert provider["weight"] == 1
    assert provider["description"] is None
    assert provider["limits"] is None
    assert provider["config"] == {"apiKey": "****mnop", "baseURL": "https://api.example.com/v1"}
    assert provider["models"] == []
    assert provider["state"]["success_count"] == 0
    assert provider["created_at"] == provider["updated_at"] > 0
    assert query(db, "SELECT id, name, type, enabled, priority, weight FROM providers") == [
        ("my-main-openai", "My Main  OpenAI!", "openai", 1, 0, 1)
    ]


async def test_the_secret_is_stored_encrypted_and_marked_sensitive(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    stored = stored_config(db, "p1")
    assert stored["baseURL"] == ('"https://api.example.com/v1"', 0)
    value, sensitive = stored["apiKey"]
    assert sensitive == 1
    assert db.cipher is not None
    assert value.startswith(f'"enc:v1:{db.cipher.key_id}:')
    assert SECRET not in value
    assert SECRET.encode() not in stored_bytes(db)
    assert await configs.provider_config(db, "p1") == {
        "baseURL": "https://api.example.com/v1",
        "apiKey": SECRET,
    }


async def test_a_short_secret_is_masked_entirely(db: Database) -> None:
    provider = await providers.create_provider(
        db, openai_body(config={"baseURL": "http://h/v1", "apiKey": "sk-short"})
    )
    assert provider["config"]["apiKey"] == "****"
    assert (await providers.get_provider(db, provider["id"]))["config"]["apiKey"] == "****"


async def test_sensitive_headers_are_masked(db: Database) -> None:
    body = openai_body(config={"baseURL": "http://h/v1", "headers": {"x-token": "t0p-s3cret"}})
    provider = await providers.create_provider(db, body)
    assert provider["config"] == {"baseURL": "http://h/v1", "headers": "****"}
    value, sensitive = stored_config(db, provider["id"])["headers"]
    assert sensitive == 1 and value.startswith('"enc:v1:') and "t0p-s3cret" not in value
    assert (await configs.provider_config(db, provider["id"]))["headers"] == {
        "x-token": "t0p-s3cret"
    }


async def test_all_fields_are_stored(db: Database) -> None:
    provider = await providers.create_provider(
        db,
        openai_body(
            id="full",
            enabled=False,
            priority=7,
            weight=3,
            description="the big one",
            limits={"rpm": 60, "tpm": 1000},
        ),
    )
    assert provider["enabled"] is False
    assert (provider["priority"], provider["weight"]) == (7, 3)
    assert provider["description"] == "the big one"
    assert provider["limits"] == {"rpm": 60, "tpm": 1000}
    assert query(db, "SELECT enabled, priority, weight, description, limits FROM providers") == [
        (0, 7, 3, "the big one", '{"rpm":60,"tpm":1000}')
    ]


async def test_a_name_without_letters_or_digits_gets_a_fallback_id(db: Database) -> None:
    provider = await providers.create_provider(db, openai_body(name="***"))
    assert provider["id"] == "provider"


async def test_a_duplicate_id_is_a_conflict_on_id(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1", name="First"))
    before = snapshot(db)
    with pytest.raises(Conflict) as caught:
        await providers.create_provider(db, openai_body(id="p1", name="Second"))
    assert caught.value.param == "id"
    assert "'p1'" in caught.value.message
    assert snapshot(db) == before


async def test_a_duplicate_name_is_a_conflict_on_name(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1", name="Same"))
    before = snapshot(db)
    with pytest.raises(Conflict) as caught:
        await providers.create_provider(db, openai_body(id="p2", name="Same"))
    assert caught.value.param == "name"
    assert "'Same'" in caught.value.message
    assert snapshot(db) == before


async def test_an_unknown_type_names_the_known_types(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(type="carrier-pigeon"))
    assert caught.value.param == "type"
    assert "'carrier-pigeon'" in caught.value.message
    assert "lm-studio" in caught.value.message
    assert "openai" in caught.value.message
    assert "anthropic" in caught.value.message


async def test_openai_needs_a_base_url(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(config={"apiKey": SECRET}))
    assert caught.value.param == "config"
    assert "'baseURL'" in caught.value.message
    with pytest.raises(InvalidRequest, match="'baseURL'"):
        await providers.create_provider(db, openai_body(config={}))
    with pytest.raises(InvalidRequest, match="'baseURL'"):
        await providers.create_provider(db, openai_body(config={"baseURL": ""}))
    assert query(db, "SELECT count(*) FROM providers") == [(0,)]


async def test_lm_studio_needs_no_base_url(db: Database) -> None:
    provider = await providers.create_provider(db, {"name": "Local", "type": "lm-studio"})
    assert provider["id"] == "local"
    assert provider["type"] == "lm-studio"
    assert provider["config"] == {}
    assert query(db, "SELECT id, type FROM providers") == [("local", "lm-studio")]


@pytest.mark.parametrize(
    ("base_url", "words"),
    [
        ("ftp://x", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("http://user:pass@host/v1", "credentials"),
    ],
)
async def test_a_bad_base_url_is_refused(db: Database, base_url: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(config={"baseURL": base_url}))
    assert caught.value.param == "config"
    assert "'baseURL'" in caught.value.message
    assert words in caught.value.message
    assert "user:pass" not in caught.value.message  # credentials are never echoed
    assert query(db, "SELECT count(*) FROM providers") == [(0,)]


async def test_an_unknown_config_key_is_named(db: Database) -> None:
    body = openai_body(config={"baseURL": "http://h/v1", "api_key": SECRET})
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, body)
    assert caught.value.param == "config"
    assert "'api_key'" in caught.value.message
    assert "apiKey" in caught.value.message  # the known keys are listed


async def test_a_config_value_of_the_wrong_type_is_refused(db: Database) -> None:
    body = openai_body(config={"baseURL": "http://h/v1", "timeout": "30s"})
    with pytest.raises(InvalidRequest, match="'timeout' must be an integer"):
        await providers.create_provider(db, body)
    body = openai_body(config={"baseURL": "http://h/v1", "timeout": 0})
    with pytest.raises(InvalidRequest, match="'timeout'"):
        await providers.create_provider(db, body)


async def test_a_config_that_is_not_an_object_is_refused(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(config=["baseURL"]))
    assert caught.value.param == "config"


@pytest.mark.parametrize("config", ["", [], 0, False])
async def test_a_falsy_config_that_is_not_an_object_is_refused(db: Database, config: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(
            db, {"name": "Local", "type": "lm-studio", "config": config}
        )
    assert caught.value.param == "config"


async def test_an_unknown_field_is_named(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(base_url="http://h/v1"))
    assert caught.value.param == "base_url"
    assert "'base_url'" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"weight": 0}, "weight"),
        ({"weight": -1}, "weight"),
        ({"priority": "high"}, "priority"),
        ({"priority": True}, "priority"),
        ({"enabled": "yes"}, "enabled"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"id": "Has Spaces"}, "id"),
        ({"limits": {"rph": 1}}, "rph"),
        ({"limits": {"rpm": 0}}, "rpm"),
        ({"description": "x" * 2001}, "description"),
    ],
)
async def test_bad_fields_are_refused_and_change_nothing(
    db: Database, fields: dict[str, Any], param: str
) -> None:
    await providers.create_provider(db, openai_body(id="existing", name="Existing"))
    before = snapshot(db)
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(**{"id": "new", "name": "New", **fields}))
    assert caught.value.param == param
    assert snapshot(db) == before


async def test_weight_zero_names_the_minimum(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(db, openai_body(weight=0))
    assert caught.value.message == "Field 'weight' must be at least 1, got 0."


async def test_a_new_provider_cannot_hold_a_masked_value(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await providers.create_provider(
            db, openai_body(config={"baseURL": "http://h/v1", "apiKey": "****mnop"})
        )
    assert caught.value.param == "config"
    assert query(db, "SELECT count(*) FROM providers") == [(0,)]


async def test_a_body_that_is_not_an_object_is_refused(db: Database) -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        await providers.create_provider(db, ["name"])


async def test_every_write_bumps_the_config_version(db: Database) -> None:
    assert config_version(db) == 0
    await providers.create_provider(db, openai_body(id="p1"))
    assert config_version(db) == 1
    await providers.update_provider(db, "p1", {"priority": 3})
    assert config_version(db) == 2
    await models.create_model(db, {"id": "m1"})
    assert config_version(db) == 3
    await links.link_model(db, "p1", {"model_id": "m1"})
    assert config_version(db) == 4
    assert await version.config_version(db) == 4


# -- update_provider -----------------------------------------------------------------------------


async def test_update_changes_only_the_given_fields(db: Database) -> None:
    created = await providers.create_provider(
        db, openai_body(id="p1", priority=1, description="before")
    )
    updated = await providers.update_provider(db, "p1", {"priority": 9, "enabled": False})
    assert updated["priority"] == 9
    assert updated["enabled"] is False
    assert updated["description"] == "before"
    assert updated["name"] == created["name"]
    assert updated["weight"] == 1
    assert updated["config"] == created["config"]
    assert updated["updated_at"] >= created["updated_at"]
    assert query(db, "SELECT priority, enabled, description FROM providers") == [(9, 0, "before")]


async def test_update_can_clear_description_and_limits(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1", description="d", limits={"rpm": 5}))
    updated = await providers.update_provider(db, "p1", {"description": None, "limits": None})
    assert updated["description"] is None
    assert updated["limits"] is None
    assert query(db, "SELECT description, limits FROM providers") == [(None, None)]


async def test_update_can_rename(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1", name="Old"))
    updated = await providers.update_provider(db, "p1", {"name": "New"})
    assert updated["name"] == "New"
    assert updated["id"] == "p1"


async def test_update_to_a_taken_name_is_a_conflict(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1", name="One"))
    await providers.create_provider(db, openai_body(id="p2", name="Two"))
    before = snapshot(db)
    with pytest.raises(Conflict) as caught:
        await providers.update_provider(db, "p2", {"name": "One"})
    assert caught.value.param == "name"
    assert snapshot(db) == before


async def test_update_cannot_change_type_or_id(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    before = snapshot(db)
    with pytest.raises(InvalidRequest) as caught:
        await providers.update_provider(db, "p1", {"type": "lm-studio"})
    assert caught.value.param == "type"
    with pytest.raises(InvalidRequest) as caught:
        await providers.update_provider(db, "p1", {"id": "p2"})
    assert caught.value.param == "id"
    assert snapshot(db) == before
    # Sending the same type or id back is fine.
    updated = await providers.update_provider(db, "p1", {"id": "p1", "type": "openai"})
    assert updated["id"] == "p1"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"weight": 0}, "weight"),
        ({"weight": None}, "weight"),
        ({"priority": None}, "priority"),
        ({"enabled": None}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"name": None}, "name"),
        ({"nmae": "x"}, "nmae"),
        ({"config": {"baseURL": "ftp://x"}}, "config"),
        ({"config": {"nope": 1}}, "config"),
        ({"config": "baseURL=x"}, "config"),
    ],
)
async def test_a_bad_update_changes_nothing(db: Database, body: dict[str, Any], param: str) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    before = snapshot(db)
    with pytest.raises(InvalidRequest) as caught:
        await providers.update_provider(db, "p1", body)
    assert caught.value.param == param
    assert snapshot(db) == before


async def test_config_updates_merge_with_the_stored_keys(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    updated = await providers.update_provider(db, "p1", {"config": {"timeout": 5000}})
    assert updated["config"] == {
        "apiKey": "****mnop",
        "baseURL": "https://api.example.com/v1",
        "timeout": 5000,
    }
    assert await configs.provider_config(db, "p1") == {
        "apiKey": SECRET,
        "baseURL": "https://api.example.com/v1",
        "timeout": 5000,
    }


async def test_a_masked_value_sent_back_keeps_the_stored_secret(db: Database) -> None:
    created = await providers.create_provider(db, openai_body(id="p1"))
    assert created["config"]["apiKey"] == "****mnop"
    before = stored_config(db, "p1")["apiKey"]
    updated = await providers.update_provider(
        db, "p1", {"config": {**created["config"], "baseURL": "http://new/v1"}}
    )
    assert updated["config"]["apiKey"] == "****mnop"
    assert stored_config(db, "p1")["apiKey"] == before
    assert (await configs.provider_config(db, "p1"))["apiKey"] == SECRET
    assert stored_config(db, "p1")["baseURL"] == ('"http://new/v1"', 0)


async def test_a_new_secret_replaces_the_stored_one(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    updated = await providers.update_provider(db, "p1", {"config": {"apiKey": "sk-0000000000zzzz"}})
    assert updated["config"]["apiKey"] == "****zzzz"
    assert (await configs.provider_config(db, "p1"))["apiKey"] == "sk-0000000000zzzz"
    assert b"sk-0000000000zzzz" not in stored_bytes(db)


async def test_masked_headers_sent_back_keep_the_stored_headers(db: Database) -> None:
    body = openai_body(
        id="p1", config={"baseURL": "http://h/v1", "headers": {"x-token": "t0p-s3cret"}}
    )
    created = await providers.create_provider(db, body)
    assert created["config"]["headers"] == "****"
    before = stored_config(db, "p1")["headers"]
    await providers.update_provider(db, "p1", {"config": created["config"]})
    assert stored_config(db, "p1")["headers"] == before
    assert (await configs.provider_config(db, "p1"))["headers"] == {"x-token": "t0p-s3cret"}


async def test_a_null_config_value_removes_the_key(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    updated = await providers.update_provider(db, "p1", {"config": {"apiKey": None}})
    assert updated["config"] == {"baseURL": "https://api.example.com/v1"}
    assert set(stored_config(db, "p1")) == {"baseURL"}


async def test_removing_a_required_key_is_refused(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    before = snapshot(db)
    with pytest.raises(InvalidRequest) as caught:
        await providers.update_provider(db, "p1", {"config": {"baseURL": None}})
    assert caught.value.param == "config"
    assert "'baseURL'" in caught.value.message
    assert snapshot(db) == before


async def test_updating_an_unknown_provider_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound) as caught:
        await providers.update_provider(db, "ghost", {"priority": 1})
    assert caught.value.param == "id"
    assert "'ghost'" in caught.value.message
    assert config_version(db) == 0


async def test_get_provider_unknown_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        await providers.get_provider(db, "ghost")


# -- models and links ----------------------------------------------------------------------------


async def test_create_model_and_duplicate(db: Database) -> None:
    model = await models.create_model(
        db, {"id": "gpt-4o", "name": "GPT-4o", "capabilities": ["chat", "tools"]}
    )
    assert model["id"] == "gpt-4o"
    assert model["name"] == "GPT-4o"
    assert model["capabilities"] == ["chat", "tools"]
    assert model["archived_at"] is None
    assert query(db, "SELECT id, name, capabilities FROM models") == [
        ("gpt-4o", "GPT-4o", '["chat","tools"]')
    ]
    before = snapshot(db)
    with pytest.raises(Conflict) as caught:
        await models.create_model(db, {"id": "gpt-4o"})
    assert caught.value.param == "id"
    assert "'gpt-4o'" in caught.value.message
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "m", "capabilities": "chat"}, "capabilities"),
        ({"id": "m", "capabilities": [1]}, "capabilities"),
        ({"id": "m", "size": 7}, "size"),
    ],
)
async def test_a_bad_model_is_refused(db: Database, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await models.create_model(db, body)
    assert caught.value.param == param
    assert query(db, "SELECT count(*) FROM models") == [(0,)]


async def test_get_model_unknown_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="'ghost'"):
        await models.get_model(db, "ghost")


async def test_link_model_creates_the_model_if_missing(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    link = await links.link_model(
        db,
        "p1",
        {
            "model_id": "org/model:7b",
            "upstream_model": "model-7b",
            "input_cost_per_1k": 0.5,
            "output_cost_per_1k": 1,
            "currency": "EUR",
        },
    )
    assert link["provider_id"] == "p1"
    assert link["model_id"] == "org/model:7b"
    assert link["is_default"] is False
    assert link["upstream_model"] == "model-7b"
    assert link["input_cost_per_1k"] == 0.5
    assert link["output_cost_per_1k"] == 1.0
    assert link["currency"] == "EUR"
    assert query(db, "SELECT id FROM models") == [("org/model:7b",)]
    assert query(
        db, "SELECT provider_id, model_id, upstream_model, currency FROM provider_models"
    ) == [("p1", "org/model:7b", "model-7b", "EUR")]
    provider = await providers.get_provider(db, "p1")
    assert [m["model_id"] for m in provider["models"]] == ["org/model:7b"]


async def test_link_model_uses_an_existing_model(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    await models.create_model(db, {"id": "m1", "name": "Named"})
    link = await links.link_model(db, "p1", {"model_id": "m1"})
    assert link["currency"] == "USD"
    assert query(db, "SELECT id, name FROM models") == [("m1", "Named")]


async def test_a_duplicate_link_is_a_conflict(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    await links.link_model(db, "p1", {"model_id": "m1"})
    before = snapshot(db)
    with pytest.raises(Conflict) as caught:
        await links.link_model(db, "p1", {"model_id": "m1", "is_default": True})
    assert caught.value.param == "model_id"
    assert "'m1'" in caught.value.message
    assert "'p1'" in caught.value.message
    assert snapshot(db) == before


async def test_is_default_moves_the_default_flag(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    await providers.create_provider(db, openai_body(id="p2", name="Other"))
    await links.link_model(db, "p1", {"model_id": "m1", "is_default": True})
    await links.link_model(db, "p2", {"model_id": "m1", "is_default": True})
    await links.link_model(db, "p1", {"model_id": "m2"})
    assert query(
        db, "SELECT provider_id, model_id, is_default FROM provider_models ORDER BY 1, 2"
    ) == [("p1", "m1", 1), ("p1", "m2", 0), ("p2", "m1", 1)]
    await links.link_model(db, "p1", {"model_id": "m3", "is_default": True})
    assert query(
        db, "SELECT provider_id, model_id, is_default FROM provider_models ORDER BY 1, 2"
    ) == [("p1", "m1", 0), ("p1", "m2", 0), ("p1", "m3", 1), ("p2", "m1", 1)]


async def test_linking_to_an_unknown_provider_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound) as caught:
        await links.link_model(db, "ghost", {"model_id": "m1"})
    assert "'ghost'" in caught.value.message
    assert query(db, "SELECT count(*) FROM models") == [(0,)]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "model_id"),
        ({"model_id": " bad"}, "model_id"),
        ({"model_id": "m1", "input_cost_per_1k": -1}, "input_cost_per_1k"),
        ({"model_id": "m1", "output_cost_per_1k": "1"}, "output_cost_per_1k"),
        ({"model_id": "m1", "is_default": "yes"}, "is_default"),
        ({"model_id": "m1", "currency": "DOLLARSSS"}, "currency"),
        ({"model_id": "m1", "cost": 1}, "cost"),
    ],
)
async def test_a_bad_link_changes_nothing(db: Database, body: dict[str, Any], param: str) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    before = snapshot(db)
    with pytest.raises(InvalidRequest) as caught:
        await links.link_model(db, "p1", body)
    assert caught.value.param == param
    assert snapshot(db) == before


async def test_list_providers_by_priority_descending(db: Database) -> None:
    for pid, priority in (("low", -5), ("b-mid", 3), ("top", 10), ("a-mid", 3)):
        await providers.create_provider(db, openai_body(id=pid, name=pid, priority=priority))
    found = await providers.list_providers(db)
    assert [p["id"] for p in found] == ["top", "a-mid", "b-mid", "low"]
    assert all("apiKey" not in str(p) and SECRET not in str(p) for p in found)


async def test_list_providers_of_an_empty_catalog(db: Database) -> None:
    assert await providers.list_providers(db) == []


async def test_load_catalog_reads_everything_in_clear(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1"))
    await links.link_model(db, "p1", {"model_id": "m1"})
    data = await catalog.load_catalog(db)
    assert data.version == 2
    assert [row["id"] for row in data.providers] == ["p1"]
    assert data.configs == {"p1": {"baseURL": "https://api.example.com/v1", "apiKey": SECRET}}
    assert [(row["provider_id"], row["model_id"]) for row in data.links] == [("p1", "m1")]
    assert [row["id"] for row in data.models] == ["m1"]


async def test_rotating_the_key_re_encrypts_every_credential(db: Database) -> None:
    await providers.create_provider(db, openai_body(id="p1", name="One"))
    await providers.create_provider(db, openai_body(id="p2", name="Two"))
    old_id = db.cipher.key_id if db.cipher else None
    new = Cipher(generate_key())
    assert await rotate_key(db, new) == 2
    stored = query(db, "SELECT value FROM provider_configs WHERE key = 'apiKey'")
    assert len(stored) == 2
    assert all(new.key_id in value and str(old_id) not in value for (value,) in stored)
    assert (await configs.provider_config(db, "p2"))["apiKey"] == SECRET
    assert SECRET.encode() not in stored_bytes(db)
