"""Management actions that do more than one store call, shared by the JSON API and the admin UI.

Each takes the :class:`~router.api.common.Services` and returns what the API answers, so that
the UI (router/ui) and the API run the same steps with the same validation and messages.
"""

from __future__ import annotations

from typing import Any

from router.api.common import Services, recorder_drained
from router.store import client_keys, lifecycle
from router.store import providers as provider_store


async def delete_or_archive_provider(app: Services, provider_id: str) -> dict[str, Any]:
    """Delete a provider, or archive it when it has history or rows about it are still queued."""
    await provider_store.get_provider(app.db, provider_id)
    pending = () if await recorder_drained(app) else (provider_id,)
    result = await lifecycle.delete_provider(app.db, provider_id, pending=pending)
    await app.snapshots.rebuild()
    return result


async def reset_circuit(app: Services, provider_id: str) -> dict[str, Any]:
    """Close the provider's circuit in this process; returns its live state."""
    provider = await provider_store.get_provider(app.db, provider_id)  # 404 for an unknown id
    app.proxy.resilience.reset(provider_id)
    return {"id": provider_id, **app.proxy.resilience.state(provider_id, provider["limits"])}


async def create_client_key(app: Services, data: Any) -> dict[str, Any]:
    """Create a client key (its secret is in the answer, this once) and load it at once."""
    created = await client_keys.create_key(app.db, data)
    await app.auth.reload(app.db)
    return created


async def revoke_client_key(app: Services, key_id: str) -> dict[str, Any]:
    """Revoke a client key; this process refuses it at once."""
    revoked = await client_keys.revoke_key(app.db, key_id)
    await app.auth.reload(app.db)
    return revoked
