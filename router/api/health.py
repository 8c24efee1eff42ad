"""Provider health: live circuit and rate-limit state, and resetting a circuit.

The state lives in this process's memory (:class:`router.resilience.policy.Resilience`); the last
background health check and the counters come from the database.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api import actions
from router.api.common import admin, json_response, services


def live_state(request: Request, provider_id: str, limits: dict[str, Any] | None) -> dict[str, Any]:
    """The live fields of one provider (``circuit``, ``usage``) for ``GET /v1/providers/{id}``."""
    return services(request).proxy.resilience.state(provider_id, limits)


@admin
async def list_health(request: Request) -> Response:
    app = services(request)
    rows = await app.db.execute(
        "SELECT id, enabled, limits, last_health_check, health_status, health_latency_ms,"
        " health_error"
        " FROM providers WHERE archived_at IS NULL ORDER BY priority DESC, id"
    )
    data = [
        {
            "id": row["id"],
            "enabled": bool(row["enabled"]),
            **app.proxy.resilience.state(
                row["id"], orjson.loads(row["limits"]) if row["limits"] else None
            ),
            "health_check": {
                "checked_at": row["last_health_check"],
                "status": row["health_status"],
                "latency_ms": row["health_latency_ms"],
                "error": row["health_error"],
            },
        }
        for row in rows
    ]
    return json_response({"data": data, "next_cursor": None})


@admin
async def reset_provider(request: Request) -> Response:
    app = services(request)
    return json_response(await actions.reset_circuit(app, request.path_params["provider_id"]))


routes = [
    Route("/v1/health/providers", list_health, methods=["GET"]),
    Route("/v1/providers/{provider_id}/reset", reset_provider, methods=["POST"]),
]
