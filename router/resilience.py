"""What the attempt loop consults and tells about each provider: breakers, limits, retry policy.

One :class:`Resilience` per process (built by the app from settings) holds the per-provider
circuit breakers and rate-limit counters. Both are keyed by provider id and live outside the
routing snapshot, so a snapshot rebuild (any management write) keeps them.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from router.auth import ClientKey
from router.breaker import BreakerPolicy, Breakers
from router.errors import RateLimited, UpstreamError, UpstreamStatusError, UpstreamUnsupported
from router.ratelimit import Limits, RateLimiter
from router.settings import Settings
from router.timeouts import Timeouts


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
        """Tell the provider's breaker how an attempt failed; client errors do not count."""
        breaker = self.breakers.get(provider_id)
        if isinstance(exc, UpstreamUnsupported):
            breaker.release(owner)
        elif isinstance(exc, UpstreamStatusError):
            if exc.status_code == 429:
                breaker.rate_limited(exc.message, exc.retry_after)
            elif exc.retryable:
                breaker.failure(exc.message, retry_after=exc.retry_after)
            else:
                breaker.release(owner)
        else:
            breaker.failure(exc.message)

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

    def state(self, provider_id: str) -> dict[str, Any]:
        """The live state of one provider, for the API: circuit and rate-limit counts."""
        breaker = self.breakers.peek(provider_id)
        if breaker is None:
            circuit = {
                "state": "closed",
                "cooldown_until": None,
                "recent_failures": 0,
                "trips": 0,
                "last_error": None,
                "last_error_at": None,
            }
        else:
            circuit = breaker.as_dict()
        return {"circuit": circuit, "usage": self.limiter.usage(provider_key(provider_id))}

    def reset(self, provider_id: str) -> None:
        """Close the provider's circuit. Rate-limit counts stay: they mirror the upstream's."""
        self.breakers.reset(provider_id)


def timeouts_from_settings(settings: Settings) -> Timeouts:
    """The global timeout defaults; each provider's config keys override them."""
    return Timeouts(
        first_byte_s=settings.upstream_first_byte_timeout_ms / 1000,
        idle_s=settings.upstream_idle_timeout_ms / 1000,
        total_s=settings.upstream_total_timeout_ms / 1000,
    )
