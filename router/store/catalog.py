"""What the routing snapshot is built from: every routable row, read in one go."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from router.store.credentials import decode_value
from router.store.db import Database, Row
from router.store.version import config_version


@dataclass(frozen=True)
class CatalogData:
    """Everything routing needs, read in one go."""

    version: int
    providers: list[Row]
    configs: dict[str, dict[str, Any]]
    links: list[Row]
    models: list[Row]

    @cached_property
    def model_ids(self) -> frozenset[str]:
        """The models routing may use (archived ones are not loaded)."""
        return frozenset(row["id"] for row in self.models)


async def load_catalog(db: Database) -> CatalogData:
    """Read the catalog (archived providers and models left out) at its ``config_version``."""
    version = await config_version(db)
    providers = await db.execute("SELECT * FROM providers WHERE archived_at IS NULL")
    configs: dict[str, dict[str, Any]] = {}
    for row in await db.execute("SELECT provider_id, key, value FROM provider_configs"):
        value = decode_value(db.cipher, row["provider_id"], row["key"], row["value"])
        configs.setdefault(row["provider_id"], {})[row["key"]] = value
    # Default links first: the health checks probe the first model they see per provider.
    links = await db.execute("SELECT * FROM provider_models ORDER BY is_default DESC")
    models = await db.execute("SELECT * FROM models WHERE archived_at IS NULL")
    return CatalogData(version, providers, configs, links, models)
