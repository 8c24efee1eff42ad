"""What the attempt loop consults and tells about each provider: breakers, limits, retry policy.

One :class:`Resilience` per process (built by the app from settings) holds the per-provider
circuit breakers and rate-limit counters. Both are keyed by provider id and live outside the
routing snapshot, so a snapshot rebuild (any management write) keeps them. With ``redis.url``
set, they are shared by every replica (:mod:`router.resilience.shared`); :meth:`Resilience.admit`
is the one call the attempt loop makes either way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.errors import (
    AdapterFailure,
    ClientRateLimited,
    LocalLimitReached,
    RouterError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnsupported,
)
from router.resilience.breaker import CLOSED, BreakerPolicy, Breakers
from router.resilience.ratelimit import Limits, RateLimiter
from router.resilience.shared import (
    RedisDown,
    SharedBreaker,
    SharedBreakers,
    SharedLimiter,
    SharedState,
)
from router.resilience.timeouts import Timeouts
from router.settings import Settings
from router.store.client_keys import ClientKey
from router.store.db import Database

log = logging.getLogger("provider_router.resilience")


def provider_key(provider_id: str) -> str:
    """The rate limiter's key for a provider."""
    return f"provider:{provider_id}"


def client_key(key_id: str) -> str:
    """The rate limiter's key for a client key."""
    return f"client:{key_id}"


@dataclass(frozen=True)
class ClientCheck:
    """A client key's rate-limit check, queued to share the request's first round trip."""

    client: ClientKey
    limits: Limits
    pending: asyncio.Future[Any]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass
class Resilience:
    breakers: Breakers = field(default_factory=lambda: Breakers(BreakerPolicy()))
    limiter: RateLimiter = field(default_factory=RateLimiter)
    max_attempts: int = 4
    connect_retries: int = 1
    retry_backoff_s: float = 0.1
    rng: random.Random = field(default_factory=lambda: random.Random(os.urandom(16)))
    # Set with redis.url: breakers and limiter are then its SharedBreakers and SharedLimiter.
    shared: SharedState | None = None
    # What :meth:`circuit_changes` last reported, per provider: (state, cooldown_until).
    _published: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    log_interval_s: float = 10.0
    log_clock: Callable[[], float] = time.monotonic
    # Per kind of log line: when one last went out, and how many were held back since.
    _logged: dict[str, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Resilience:
        policy = BreakerPolicy(
            failure_threshold=settings.breaker_failure_threshold,
            window_s=settings.breaker_window_ms / 1000,
            cooldown_s=settings.breaker_cooldown_ms / 1000,
            max_cooldown_s=settings.breaker_max_cooldown_ms / 1000,
            rate_limit_cooldown_s=settings.breaker_rate_limit_cooldown_ms / 1000,
        )
        shared = None
        breakers, limiter = Breakers(policy), RateLimiter()
        if settings.redis_url:
            shared = SharedState(
                settings.redis_url,
                policy=policy,
                on_failure=settings.redis_on_failure,
                timeout_s=settings.redis_timeout_ms / 1000,
                prefix=settings.redis_prefix,
            )
            breakers, limiter = SharedBreakers(shared), SharedLimiter(shared)
        return cls(
            breakers=breakers,
            limiter=limiter,
            shared=shared,
            max_attempts=settings.max_attempts,
            connect_retries=settings.connect_retries,
            retry_backoff_s=settings.retry_backoff_ms / 1000,
        )

    def backoff(self, retry: int) -> float:
        """Seconds before same-provider retry number ``retry`` (0-based): exponential, with
        full jitter between half and one and a half times, so retries do not march in step."""
        return float(self.retry_backoff_s * (2**retry) * (0.5 + self.rng.random()))

    def failed(self, provider_id: str, exc: UpstreamError, owner: object = None) -> None:
        """Tell the provider's breaker how an attempt failed; client errors, our adapter's bugs
        and the proxy's own limits do not count. A provider's failure is logged (at most one line
        per provider per interval)."""
        breaker = self.breakers.get(provider_id)
        if isinstance(exc, UpstreamUnsupported | AdapterFailure | LocalLimitReached):
            breaker.release(owner)
            return
        if isinstance(exc, UpstreamStatusError):
            if exc.status_code == 429:
                breaker.rate_limited(exc.message, exc.retry_after)
            elif exc.retryable:
                breaker.failure(
                    exc.message, retry_after=exc.retry_after, owner=owner, problem=exc.fault
                )
            else:
                breaker.release(owner)
                return
        else:
            breaker.failure(exc.message, owner=owner)
        self.log_limited(
            f"failed:{provider_id}", logging.WARNING, "Provider %r failed: %s", provider_id,
            exc.message,
        )  # fmt: skip

    def log_limited(self, key: str, level: int, message: str, *args: Any) -> None:
        """Log a line of kind ``key`` unless one went out within ``log_interval_s``; the next
        line that does says how many were held back, so a failing upstream cannot flood."""
        now = self.log_clock()
        last, held = self._logged.get(key, (-math.inf, 0))
        if now - last < self.log_interval_s:
            self._logged[key] = (last, held + 1)
            return
        self._logged[key] = (now, 0)
        if held:
            message += f" ({held} more like it in the last {self.log_interval_s:g} s not logged)"
        log.log(level, message, *args)

    async def admit(
        self,
        provider_id: str,
        limits: Limits | None,
        owner: object,
        lease_s: float,
        client_check: ClientCheck | None = None,
    ) -> tuple[str, float] | None:
        """May ``owner`` (a request) try this provider now? Counts it if so and returns None;
        else ``("circuit_open" | "rate_limited", seconds until it may)``. ``lease_s``: how long
        a half-open probe may take before another replica may probe instead. ``client_check``
        (the request's first admission only): the client key's pending check, settled here
        first; over its limit, this raises 429 and the provider's admission is taken back.

        Shared: one Redis script decides (circuit, then limits). Per process, or when Redis is
        away and ``redis.on_failure`` is "local": this process's breaker and limiter."""
        breaker = self.breakers.get(provider_id)
        shared = self.shared
        if shared is not None:
            if shared.available:
                subject, nonce = provider_key(provider_id), shared.nonce()
                try:
                    found = await shared.call(
                        lambda: shared.start_admit(subject, limits, owner, lease_s, nonce)
                    )
                except RedisDown:
                    found = None
                if client_check is not None:
                    try:
                        await self.settle_client(client_check)
                    except RouterError:
                        if found is not None and found[0] == "ok":
                            shared.refund(subject, nonce, owner)
                        raise
                if found is not None:
                    assert isinstance(breaker, SharedBreaker)
                    breaker.mirror(found[3:])
                    if found[0] != "ok":
                        return found[0], int(found[1]) / 1000
                    if found[2]:
                        breaker.admitted_probe(owner)
                    return None
            elif client_check is not None:
                await self.settle_client(client_check)
            if shared.on_failure == "closed":
                raise shared.refuse()
        if not breaker.allow(owner):
            return "circuit_open", breaker.retry_in()
        wait = self.limiter.acquire(provider_key(provider_id), limits)
        if wait is not None:
            breaker.release(owner)
            return "rate_limited", wait
        return None

    def check_client(self, client: ClientKey) -> ClientCheck | None:
        """Count one request for a client key; raise 429 when it is over its rpm or tpm.

        Per process the check is made now. Shared, it is only queued, and returns the pending
        check: pass it to the request's first :meth:`admit`, which sends both in one round trip
        and settles the client's first (nothing goes upstream for a client over its limit)."""
        limits = Limits(rpm=client.rpm_limit, tpm=client.tpm_limit)
        shared = self.shared
        if shared is not None:
            if shared.available:
                subject = client_key(client.id)
                pending = shared.start_admit(subject, limits, None, 0, shared.nonce())
                # Settled by admit(); a request that never gets there must not leave an
                # exception nobody retrieved.
                pending.add_done_callback(_retrieve)
                return ClientCheck(client, limits, pending)
            if shared.on_failure == "closed":
                raise shared.refuse()
        self._client_verdict(client, self.limiter.acquire(client_key(client.id), limits))
        return None

    async def settle_client(self, check: ClientCheck) -> None:
        """Wait for a queued client check (:meth:`check_client`); raise 429 when over."""
        shared = self.shared
        assert shared is not None
        try:
            found = await shared.call(lambda: check.pending)
        except RedisDown:
            if shared.on_failure == "closed":
                raise shared.refuse() from None
            wait = self.limiter.acquire(client_key(check.client.id), check.limits)
        else:
            wait = int(found[1]) / 1000 if found[0] != "ok" else None
        self._client_verdict(check.client, wait)

    @staticmethod
    def _client_verdict(client: ClientKey, wait: float | None) -> None:
        if wait is not None:
            raise ClientRateLimited(
                f"Client key {client.name!r} is over its rate limit "
                f"(rpm {client.rpm_limit or '-'}, tpm {client.tpm_limit or '-'}); retry later.",
                retry_after=wait,
            )

    def state(self, provider_id: str, limits: Mapping[str, Any] | None) -> dict[str, Any]:
        """The live state of one provider, for the API: circuit and rate-limit counts.

        ``usage`` holds a counter for each limit in ``limits`` (the provider's ``limits``
        object) and is null without limits: only limited providers are counted (counting every
        request of every provider for a day would cost memory and time on the hot path)."""
        breaker = self.breakers.peek(provider_id)
        if breaker is None:
            circuit = {
                "state": "closed",
                "cooldown_until": None,
                "recent_failures": 0,
                "trips": 0,
                "last_error": None,
                "last_error_at": None,
                "problem": None,
            }
        else:
            circuit = breaker.as_dict()
        found = Limits.from_mapping(limits)
        usage = None if found is None else self.limiter.usage(provider_key(provider_id), found)
        return {"circuit": circuit, "usage": usage}

    def shared_status(self) -> dict[str, Any]:
        """Where limits and circuits are kept, for ``/health`` and metrics."""
        if self.shared is None:
            return {"backend": "process"}
        return self.shared.status()

    async def refresh_shared(self, provider_ids: list[str]) -> None:
        """Mirror the shared circuits and usage of ``provider_ids`` (no-op per process)."""
        if self.shared is not None and isinstance(self.breakers, SharedBreakers):
            await self.shared.refresh(self.breakers, provider_ids)

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    def reset(self, provider_id: str) -> None:
        """Close the provider's circuit. Rate-limit counts stay: they mirror the upstream's."""
        if self.breakers.peek(provider_id) is not None:
            log.info("Circuit of provider %r reset by an operator.", provider_id)
        self.breakers.reset(provider_id)

    def circuit_changes(self) -> list[tuple[str, str, int | None]]:
        """``(provider_id, state, cooldown_until)`` for each circuit that changed since the last
        call (a reset provider reports ``closed``), so the database copy is written only then."""
        current = {
            pid: (found["state"], found["cooldown_until"])
            for pid, breaker in self.breakers.items()
            for found in (breaker.as_dict(),)
        }
        for pid in self._published.keys() - current.keys():
            current[pid] = (CLOSED, None)
        changed = [
            (pid, *now) for pid, now in current.items() if not _same(self._published.get(pid), now)
        ]
        self._published = {pid: now for pid, now in current.items() if now != (CLOSED, None)}
        return changed


def _same(before: tuple[str, int | None] | None, now: tuple[str, int | None]) -> bool:
    """Equal circuit states; ``cooldown_until`` is recomputed from two clocks on every call, so
    a difference under a second is the same cooldown."""
    before = before or (CLOSED, None)
    if before[0] != now[0] or (before[1] is None) != (now[1] is None):
        return False
    return before[1] is None or now[1] is None or abs(before[1] - now[1]) < 1000


async def publish_circuits(db: Database, resilience: Resilience, interval_s: float) -> None:
    """Copy circuit changes into the providers table every ``interval_s`` (one transaction per
    round, none when nothing changed), for the CLI and other processes to read. Cancel to stop;
    the caller runs one last :func:`write_circuit_changes` at shutdown."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await write_circuit_changes(db, resilience)
        except Exception:
            log.exception("Could not record circuit states; trying again next interval")


async def mirror_shared(
    resilience: Resilience, provider_ids: Callable[[], list[str]], interval_s: float
) -> None:
    """Refresh this process's mirror of the shared circuits and usage every ``interval_s``, so
    the API shows what other replicas decided too. Cancel to stop."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await resilience.refresh_shared(provider_ids())
        except Exception:
            log.exception("Could not mirror the shared circuits; trying again next interval")


async def write_circuit_changes(db: Database, resilience: Resilience) -> int:
    changes = resilience.circuit_changes()
    if changes:
        stamp = int(time.time() * 1000)
        async with db.transaction() as conn:
            await conn.executemany(
                "UPDATE providers SET circuit_state = ?, cooldown_until = ?,"
                " circuit_changed_at = ? WHERE id = ?",
                [(state, until, stamp, pid) for pid, state, until in changes],
            )
    return len(changes)


def timeouts_from_settings(settings: Settings) -> Timeouts:
    """The global timeout defaults; each provider's config keys override them."""
    return Timeouts(
        first_byte_s=settings.upstream_first_byte_timeout_ms / 1000,
        idle_s=settings.upstream_idle_timeout_ms / 1000,
        total_s=settings.upstream_total_timeout_ms / 1000,
    )
