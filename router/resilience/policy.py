"""What the attempt loop consults and tells about each provider: breakers, limits, retry policy.

One :class:`Resilience` per process (built by the app from settings) holds the per-provider
circuit breakers and rate-limit counters. Both are keyed by provider id and live outside the
routing snapshot, so a snapshot rebuild (any management write) keeps them.
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
    LocalLimitReached,
    RateLimited,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnsupported,
)
from router.resilience.breaker import CLOSED, BreakerPolicy, Breakers
from router.resilience.ratelimit import Limits, RateLimiter
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


@dataclass
class Resilience:
    breakers: Breakers = field(default_factory=lambda: Breakers(BreakerPolicy()))
    limiter: RateLimiter = field(default_factory=RateLimiter)
    max_attempts: int = 4
    connect_retries: int = 1
    retry_backoff_s: float = 0.1
    rng: random.Random = field(default_factory=lambda: random.Random(os.urandom(16)))
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
        return cls(
            breakers=Breakers(policy),
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

    def check_client(self, client: ClientKey) -> None:
        """Count one request for a client key; raise 429 when it is over its rpm or tpm."""
        wait = self.limiter.acquire(
            client_key(client.id), Limits(rpm=client.rpm_limit, tpm=client.tpm_limit)
        )
        if wait is not None:
            raise RateLimited(
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
