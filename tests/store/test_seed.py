"""Seeding an empty catalog from the config file's ``[[providers]]``: once, and all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.settings import SettingsError, load_settings
from router.store import configs, models, providers
from router.store.db import Database
from router.store.seed import seed_from_config
from tests.helpers import query

SOURCE = "/etc/provider-router/config.toml"
EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def example_providers() -> list[dict[str, Any]]:
    """The shape of config.example.toml: string models and table models with costs."""
    return [
        {
            "id": "mock",
            "name": "Local mock upstream",
            "type": "openai",
            "priority": 10,
            "weight": 1,
            "config": {"baseURL": "http://127.0.0.1:9000/v1", "apiKey": "mock-key", "timeout": 1},
            "models": [
                "mock-gpt",
                {"id": "mock-gpt-renamed", "upstream_model": "mock-gpt"},
                {
                    "id": "priced",
                    "upstream_model": "priced-v2",
                    "input_cost_per_1k": 0.1,
                    "output_cost_per_1k": 0.2,
                    "currency": "EUR",
                    "is_default": True,
                },
            ],
        },
        {"name": "LM Studio", "type": "lm-studio", "models": ["local-llama"]},
    ]


def catalog_counts(db: Database) -> dict[str, int]:
    tables = ("providers", "provider_configs", "models", "provider_models")
    return {t: query(db, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def seeded_flag(db: Database) -> list[tuple[Any, ...]]:
    return query(db, "SELECT key FROM settings WHERE key = 'seeded_from_config_at'")


async def test_seeding_creates_providers_models_and_links(db: Database) -> None:
    assert await seed_from_config(db, example_providers(), SOURCE) == 2
    assert query(db, "SELECT id, name, type, priority FROM providers ORDER BY id") == [
        ("lm-studio", "LM Studio", "lm-studio", 0),
        ("mock", "Local mock upstream", "openai", 10),
    ]
    assert query(
        db,
        "SELECT provider_id, model_id, is_default, upstream_model, input_cost_per_1k,"
        " output_cost_per_1k, currency FROM provider_models ORDER BY 1, 2",
    ) == [
        ("lm-studio", "local-llama", 0, None, None, None, "USD"),
        ("mock", "mock-gpt", 0, None, None, None, "USD"),
        ("mock", "mock-gpt-renamed", 0, "mock-gpt", None, None, "USD"),
        ("mock", "priced", 1, "priced-v2", 0.1, 0.2, "EUR"),
    ]
    assert query(db, "SELECT id FROM models ORDER BY id") == [
        ("local-llama",),
        ("mock-gpt",),
        ("mock-gpt-renamed",),
        ("priced",),
    ]
    assert await configs.provider_config(db, "mock") == {
        "baseURL": "http://127.0.0.1:9000/v1",
        "apiKey": "mock-key",
        "timeout": 1,
    }
    assert query(db, "SELECT is_sensitive FROM provider_configs WHERE key = 'apiKey'") == [(1,)]
    assert len(seeded_flag(db)) == 1


async def test_the_shipped_example_config_seeds(db: Database) -> None:
    settings = load_settings(str(EXAMPLE), environ={})
    assert await seed_from_config(db, settings.seed_providers, str(EXAMPLE)) == 1
    assert query(db, "SELECT model_id, upstream_model FROM provider_models ORDER BY 1") == [
        ("mock-gpt", None),
        ("mock-gpt-renamed", "mock-gpt"),
    ]


async def test_seeding_does_not_change_the_given_entries(db: Database) -> None:
    providers = example_providers()
    await seed_from_config(db, providers, SOURCE)
    assert providers == example_providers()


async def test_a_second_seed_does_nothing(db: Database) -> None:
    await seed_from_config(db, example_providers(), SOURCE)
    before = catalog_counts(db)
    other = [{"id": "other", "name": "Other", "type": "lm-studio"}]
    assert await seed_from_config(db, other, SOURCE) == 0
    assert catalog_counts(db) == before
    assert query(db, "SELECT id FROM providers WHERE id = 'other'") == []


async def test_no_seed_after_the_catalog_was_emptied_by_hand(db: Database) -> None:
    await seed_from_config(db, example_providers(), SOURCE)
    query(db, "DELETE FROM providers")  # cascades to configs and links
    query(db, "DELETE FROM models")
    assert catalog_counts(db) == dict.fromkeys(catalog_counts(db), 0)
    assert await seed_from_config(db, example_providers(), SOURCE) == 0
    assert catalog_counts(db) == dict.fromkeys(catalog_counts(db), 0)


async def test_nothing_to_seed(db: Database) -> None:
    assert await seed_from_config(db, [], SOURCE) == 0
    assert seeded_flag(db) == []
    # An empty list does not use up the one seeding.
    assert await seed_from_config(db, example_providers(), SOURCE) == 2


async def test_a_bad_entry_names_it_and_leaves_the_catalog_empty(db: Database) -> None:
    providers = example_providers()
    providers[1]["type"] = "carrier-pigeon"
    with pytest.raises(SettingsError) as caught:
        await seed_from_config(db, providers, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"providers[1] in {SOURCE}: ")
    assert "'carrier-pigeon'" in message
    assert catalog_counts(db) == {
        "providers": 0,
        "provider_configs": 0,
        "models": 0,
        "provider_models": 0,
    }
    assert seeded_flag(db) == []
    # Fixed, the next start seeds it.
    assert await seed_from_config(db, example_providers(), SOURCE) == 2


@pytest.mark.parametrize(
    ("models", "words"),
    [
        ("mock-gpt", "'models' must be an array"),
        ([42], "each entry of 'models'"),
        ([{"id": "m", "cost": 1}], "'cost'"),
        (["ok-model", "bad model id"], "'model_id'"),
    ],
)
async def test_a_bad_model_entry_leaves_the_catalog_empty(
    db: Database, models: Any, words: str
) -> None:
    providers = example_providers()
    providers[1]["models"] = models
    with pytest.raises(SettingsError) as caught:
        await seed_from_config(db, providers, SOURCE)
    assert str(caught.value).startswith(f"providers[1] in {SOURCE}: ")
    assert words in str(caught.value)
    assert catalog_counts(db) == dict.fromkeys(catalog_counts(db), 0)
    assert seeded_flag(db) == []


async def test_duplicate_entries_are_refused(db: Database) -> None:
    providers = example_providers()
    providers[1]["id"] = "mock"
    with pytest.raises(SettingsError, match=r"providers\[1\] in .*'mock' already exists"):
        await seed_from_config(db, providers, SOURCE)
    assert catalog_counts(db)["providers"] == 0


async def test_a_catalog_with_a_model_is_not_seeded(db: Database) -> None:
    await models.create_model(db, {"id": "already-here"})
    assert await seed_from_config(db, example_providers(), SOURCE) == 0
    assert catalog_counts(db) == {
        "providers": 0,
        "provider_configs": 0,
        "models": 1,
        "provider_models": 0,
    }
    assert seeded_flag(db) == []


async def test_a_catalog_with_a_provider_is_not_seeded(db: Database) -> None:
    await providers.create_provider(db, {"id": "mine", "name": "Mine", "type": "lm-studio"})
    assert await seed_from_config(db, example_providers(), SOURCE) == 0
    assert query(db, "SELECT id FROM providers") == [("mine",)]


async def test_seed_rate_limit_keys_become_the_provider_limits(db: Database) -> None:
    entry = {
        "id": "capped",
        "name": "capped",
        "type": "openai",
        "rate_limit_per_minute": 60,
        "rate_limit_per_day": 1000,
        "limits": {"tpm": 90000},
        "config": {"baseURL": "http://127.0.0.1:9000/v1"},
    }
    assert await seed_from_config(db, [entry], SOURCE) == 1
    provider = await providers.get_provider(db, "capped")
    assert provider["limits"] == {"rpm": 60, "rpd": 1000, "tpm": 90000}
    assert "rate_limit_per_minute" in entry  # the settings' own entry is left as it was


async def test_an_env_reference_is_resolved_at_seeding_and_never_written_back(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[providers]]\nid = "openai"\nname = "OpenAI"\ntype = "openai"\nmodels = ["gpt-4o"]\n'
        '[providers.config]\nbaseURL = "https://api.openai.com/v1"\n'
        'apiKey = "${env:TEST_SEED_OPENAI_KEY}"\n'
    )
    before = config.read_bytes()
    monkeypatch.setenv("TEST_SEED_OPENAI_KEY", "sk-from-the-environment-9876")
    settings = load_settings(str(config), environ={})
    assert await seed_from_config(db, settings.seed_providers, str(config)) == 1
    stored = await configs.provider_config(db, "openai")
    assert stored["apiKey"] == "sk-from-the-environment-9876"
    assert (await configs.masked_config(db, "openai"))["apiKey"] == "****9876"
    assert config.read_bytes() == before  # the file keeps the reference, not the key
    raw = query(db, "SELECT value FROM provider_configs WHERE key = 'apiKey'")[0][0]
    assert "sk-from-the-environment" not in raw  # encrypted like any key


@pytest.mark.parametrize("value", [None, ""])
async def test_an_env_reference_to_nothing_stops_seeding_naming_it(
    db: Database, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("TEST_SEED_MISSING", raising=False)
    else:
        monkeypatch.setenv("TEST_SEED_MISSING", value)
    entry = {"name": "x", "type": "anthropic", "config": {"apiKey": "${env:TEST_SEED_MISSING}"}}
    with pytest.raises(SettingsError) as caught:
        await seed_from_config(db, [entry], SOURCE)
    assert "providers[0] in /etc/provider-router/config.toml" in str(caught.value)
    assert "'apiKey' reads environment variable TEST_SEED_MISSING" in str(caught.value)
    assert ("not set" if value is None else "empty") in str(caught.value)
    assert catalog_counts(db)["providers"] == 0
