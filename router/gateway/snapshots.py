"""Keeps the routing snapshot in step with the database.

A management write in this process calls :meth:`SnapshotManager.rebuild` at once; writes by other
processes (a second server, the CLI) bump ``config_version``, which :meth:`SnapshotManager.watch`
checks every reload interval, and at once when :class:`ConfigChanges` says it changed (on
PostgreSQL, a trigger sends ``NOTIFY provider_router_config`` on every bump, and
:meth:`ConfigChanges.follow` listens).

Adapters (and their connection pools) are reused across rebuilds while a provider's type and
config stay the same; replaced ones are closed after a grace period so that requests still using
them can finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import orjson

from providers.base import Adapter, AdapterOptions
from providers.registry import get_adapter_class
from router.errors import RouterError
from router.gateway.routing import Candidate, Snapshot, order
from router.resilience.ratelimit import Limits
from router.resilience.timeouts import Timeouts
from router.store import catalog
from router.store.db import Database
from router.store.version import config_version

log = logging.getLogger("provider_router.snapshots")
CONFIG_CHANNEL = "provider_router_config"


class ConfigChanges:
    """Wakes the config watchers early. Each watcher takes a :meth:`subscribe` flag and calls
    ``await changes.wait(flag, timeout_s)``, which returns when :meth:`notify` was called since
    its last return, or when the timeout passes. A notification that comes while the watcher is
    busy (rebuilding for the previous one) is kept in its flag, never lost."""

    def __init__(self) -> None:
        self._flags: list[asyncio.Event] = []
        self.notified = 0
        self.listening = False

    def subscribe(self) -> asyncio.Event:
        flag = asyncio.Event()
        self._flags.append(flag)
        return flag

    def notify(self) -> None:
        self.notified += 1
        for flag in self._flags:
            flag.set()

    @staticmethod
    async def wait(flag: asyncio.Event, timeout_s: float) -> None:
        if not flag.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flag.wait(), timeout_s)
        flag.clear()  # before the caller checks, so a notification from now on wakes it again

    async def follow(self, db: Database, retry_s: float = 1.0) -> None:
        """Listen for config notifications for good, reconnecting after a lost connection
        (the watchers' polling covers the gap, and a reconnect wakes them once to catch up)."""
        while True:
            lost = asyncio.Event()
            try:
                async with db.listen(CONFIG_CHANNEL, lambda _: self.notify(), lost.set):
                    self.listening = True
                    self.notify()
                    await lost.wait()
                log.warning("Lost the config notification connection; reconnecting")
            except Exception:
                log.warning("Could not listen for config changes; polling until it can")
            finally:
                self.listening = False
            await asyncio.sleep(retry_s)


class SnapshotManager:
    def __init__(
        self,
        db: Database,
        options: AdapterOptions,
        *,
        retire_after_s: float = 60.0,
        timeouts: Timeouts | None = None,
        changes: ConfigChanges | None = None,
    ):
        self.db = db
        self.changes = changes or ConfigChanges()
        self.options = options
        self.timeouts = timeouts or Timeouts()
        self.current = Snapshot()
        self._adapters: dict[str, tuple[bytes, Adapter]] = {}
        self._retiring: dict[asyncio.Task[None], Adapter] = {}
        self._retire_after_s = retire_after_s
        self._lock = asyncio.Lock()

    def adapters(self) -> dict[str, Adapter]:
        """The live adapter of every usable provider, by id (disabled ones included)."""
        return {provider_id: adapter for provider_id, (_, adapter) in self._adapters.items()}

    def adapter(self, provider_id: str) -> Adapter | None:
        entry = self._adapters.get(provider_id)
        return entry[1] if entry else None

    async def rebuild(self) -> Snapshot:
        """Read the catalog and swap in a new snapshot."""
        async with self._lock:
            data = await catalog.load_catalog(self.db)
            self.current = self._build(data)
            return self.current

    async def reload(self, provider_id: str) -> Snapshot:
        """Rebuild with a fresh adapter (new connection pool) for ``provider_id``."""
        async with self._lock:
            entry = self._adapters.pop(provider_id, None)
            if entry is not None:
                self._retire(entry[1])
            self.current = self._build(await catalog.load_catalog(self.db))
            return self.current

    def _build(self, data: catalog.CatalogData) -> Snapshot:
        adapters: dict[str, tuple[bytes, Adapter]] = {}
        providers = {}
        for row in data.providers:
            config = data.configs.get(row["id"], {})
            fingerprint = orjson.dumps([row["type"], config], option=orjson.OPT_SORT_KEYS)
            previous = self._adapters.get(row["id"])
            if previous is not None and previous[0] == fingerprint:
                adapters[row["id"]] = previous
            else:
                try:
                    adapter_class = get_adapter_class(row["type"])
                    adapters[row["id"]] = (
                        fingerprint,
                        adapter_class(row["id"], config, self.options),
                    )
                except (RouterError, ValueError, TypeError) as exc:
                    log.error("Provider %r cannot be used: %s", row["id"], exc)
                    continue
            providers[row["id"]] = row
        for provider_id, (_, adapter) in self._adapters.items():
            kept = adapters.get(provider_id)
            if kept is None or kept[1] is not adapter:
                self._retire(adapter)
        self._adapters = adapters

        routes: dict[str, list[Candidate]] = defaultdict(list)
        linked: dict[str, dict[str, Candidate]] = defaultdict(dict)
        limits = {
            pid: Limits.from_mapping(orjson.loads(row["limits"]) if row["limits"] else None)
            for pid, row in providers.items()
        }
        timeouts = {pid: self.timeouts.for_provider(data.configs.get(pid, {})) for pid in providers}
        for link in data.links:
            provider = providers.get(link["provider_id"])
            if provider is None or link["model_id"] not in data.model_ids:  # archived model
                continue
            candidate = Candidate(
                provider_id=provider["id"],
                adapter=adapters[provider["id"]][1],
                upstream_model=link["upstream_model"] or link["model_id"],
                priority=provider["priority"],
                weight=provider["weight"],
                input_cost_per_1k=link["input_cost_per_1k"],
                output_cost_per_1k=link["output_cost_per_1k"],
                currency=link["currency"],
                limits=limits[provider["id"]],
                timeouts=timeouts[provider["id"]],
            )
            linked[link["model_id"]][provider["id"]] = candidate
            if provider["enabled"]:
                routes[link["model_id"]].append(candidate)
        return Snapshot(
            version=data.version,
            routes={model: order(found) for model, found in routes.items()},
            linked=dict(linked),
            disabled=frozenset(pid for pid, row in providers.items() if not row["enabled"]),
            models={
                row["id"]: row["created_at"] // 1000
                for row in sorted(data.models, key=lambda r: r["id"])
            },
        )

    def _retire(self, adapter: Adapter) -> None:
        async def close_later() -> None:
            await asyncio.sleep(self._retire_after_s)
            await adapter.aclose()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring[task] = adapter
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def watch(self, interval_s: float) -> None:
        """Check ``config_version`` every ``interval_s`` and on every notification, for good;
        rebuild when another process changed the catalog."""
        woken = self.changes.subscribe()
        while True:
            await self.changes.wait(woken, interval_s)
            try:
                version = await config_version(self.db)
                if version != self.current.version:
                    await self.rebuild()
                    log.info("Routing snapshot rebuilt for config version %d", version)
            except Exception:
                # A failed poll must not end hot reload for good; the next poll tries again.
                log.exception("Could not check the config version; retrying")

    async def aclose(self) -> None:
        adapters = [adapter for _, adapter in self._adapters.values()]
        for task, adapter in list(self._retiring.items()):
            task.cancel()
            adapters.append(adapter)
        self._retiring.clear()
        self._adapters = {}
        for adapter in adapters:
            await adapter.aclose()
