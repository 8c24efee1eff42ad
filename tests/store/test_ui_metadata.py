"""What the UI keeps on a provider: a display name and preferences, validated like the API."""

from __future__ import annotations

import pytest

from router.errors import InvalidRequest, NotFound
from router.store import providers as provider_store
from router.store import ui_metadata, version
from router.store.db import Database

PROVIDER = {"id": "p", "name": "p", "type": "openai", "config": {"baseURL": "http://x/v1"}}


async def test_set_and_read_back(db: Database) -> None:
    await provider_store.create_provider(db, PROVIDER)
    assert await ui_metadata.get_metadata(db, "p") == {"display_name": None, "preferences": {}}
    before = await version.config_version(db)
    found = await ui_metadata.set_metadata(
        db, "p", {"display_name": "Primary", "preferences": {"pinned": True}}
    )
    assert found == {"display_name": "Primary", "preferences": {"pinned": True}}
    assert await version.config_version(db) == before  # routing does not read it
    assert await ui_metadata.set_metadata(db, "p", {"preferences": {}}) == {
        "display_name": "Primary", "preferences": {}
    }  # fmt: skip
    assert (await ui_metadata.all_metadata(db))["p"]["display_name"] == "Primary"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"preferences": [1]}, "Field 'preferences' must be an object, got [1]."),
        ({"display_name": "x" * 201}, "Field 'display_name' is longer than 200 characters."),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_metadata_is_refused(db: Database, body: dict[str, object], message: str) -> None:
    await provider_store.create_provider(db, PROVIDER)
    with pytest.raises(InvalidRequest) as caught:
        await ui_metadata.set_metadata(db, "p", body)
    assert message in caught.value.message
    assert await ui_metadata.get_metadata(db, "p") == {"display_name": None, "preferences": {}}


async def test_unknown_provider(db: Database) -> None:
    with pytest.raises(NotFound):
        await ui_metadata.set_metadata(db, "nope", {})
