"""Health checks: probe providers in the background, or on demand.

A round probes each enabled provider that wants it (its ``healthCheck`` config key; by default
only local types, because a probe of a type that cannot list its models is a one-token
completion, which a paid provider charges for) with :func:`router.gateway.probe.probe`, writes
``last_health_check``, ``health_status``, ``health_latency_ms`` and ``health_error`` in one
transaction, and closes the circuit of a provider whose probe succeeded.

:func:`probe_and_record` is also what ``provider-router provider test [ID ...|--all]`` runs,
with adapters of its own, so an on-demand check needs no server and is recorded the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import Adapter
from router.gateway.probe import PROBE_TIMEOUT_S, ProbeResult, probe
from router.gateway.snapshots import SnapshotManager
from router.resilience.breaker import CLOSED
from router.resilience.policy import Resilience
from router.settings import Settings
from router.store import version
from router.store.db import Database

log = logging.getLogger("provider_router.health")

# Types that run on the operator's own machine: probing them costs nothing.
LOCAL_TYPES = frozenset({"ollama", "lm-studio"})

_RECORD = (
    "UPDATE providers SET last_health_check = ?, health_status = ?, health_latency_ms = ?,"
    " health_error = ? WHERE id = ?"
)


@dataclass(frozen=True)
class HealthResult:
    provider_id: str
    checked_at: int  # Unix ms
    result: ProbeResult

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.provider_id, "checked_at": self.checked_at, **self.result.as_dict()}


def wants_check(provider_type: str, config: Mapping[str, Any]) -> bool:
    """Whether background checks probe this provider: its ``healthCheck`` key, else its type."""
    chosen = config.get("healthCheck")
    if isinstance(chosen, bool):
        return chosen
    return provider_type in LOCAL_TYPES


async def probe_and_record(
    db: Database,
    targets: Iterable[tuple[str, Adapter, str | None]],
    timeout_s: float = PROBE_TIMEOUT_S,
) -> list[HealthResult]:
    """Probe ``(provider_id, adapter, model)`` targets concurrently, each for at most
    ``timeout_s``, and record the results."""
    targets = list(targets)
    if not targets:
        return []
    checked_at = version.now_ms()
    found = await asyncio.gather(
        *(probe(adapter, model, timeout_s=timeout_s) for _, adapter, model in targets)
    )
    results = [
        HealthResult(pid, checked_at, result)
        for (pid, _, _), result in zip(targets, found, strict=True)
    ]
    async with db.transaction() as conn:
        await conn.executemany(
            _RECORD,
            [
                (r.checked_at, "ok" if r.result.ok else "error", r.result.latency_ms,
                 r.result.error, r.provider_id)
                for r in results
            ],
        )  # fmt: skip
    return results


def close_recovered(resilience: Resilience, results: Iterable[HealthResult]) -> None:
    """Close the circuit of every provider whose probe succeeded."""
    for found in results:
        breaker = resilience.breakers.peek(found.provider_id)
        if found.result.ok and breaker is not None and breaker.state != CLOSED:
            log.info("Provider %r answered its health check: circuit closed", found.provider_id)
            breaker.close()


class HealthChecker:
    """The background task: a round every ``interval_s``, through the live adapters."""

    def __init__(
        self,
        db: Database,
        snapshots: SnapshotManager,
        resilience: Resilience,
        interval_s: float,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.db = db
        self.snapshots = snapshots
        self.resilience = resilience
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.rounds = 0

    def targets(self) -> list[tuple[str, Adapter, str | None]]:
        snapshot = self.snapshots.current
        models: dict[str, str] = {}
        for model_links in snapshot.linked.values():
            for provider_id, candidate in model_links.items():
                models.setdefault(provider_id, candidate.upstream_model)
        return [
            (provider_id, adapter, models.get(provider_id))
            for provider_id, adapter in sorted(self.snapshots.adapters().items())
            if provider_id not in snapshot.disabled and wants_check(adapter.type, adapter.config)
        ]

    async def check_round(self) -> list[HealthResult]:
        results = await probe_and_record(self.db, self.targets(), self.timeout_s)
        close_recovered(self.resilience, results)
        self.rounds += 1
        return results

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_round()
            except Exception:
                # One failed round (a locked database, say) must not end health checks for good.
                log.exception("Health check round failed; trying again next interval")


def start_health_checks(
    db: Database, snapshots: SnapshotManager, resilience: Resilience, settings: Settings
) -> asyncio.Task[None] | None:
    """Start the background checks (None when ``health.interval_ms`` is 0)."""
    if settings.health_check_interval_ms <= 0:
        return None
    checker = HealthChecker(
        db,
        snapshots,
        resilience,
        settings.health_check_interval_ms / 1000,
        settings.health_check_timeout_ms / 1000,
    )
    return asyncio.get_running_loop().create_task(checker.run(), name="health-checks")
