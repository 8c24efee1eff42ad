"""Circuit breakers: one per provider, so one bad upstream stops costing every request time.

::

    closed ──(N failures within the window, or a 429)──> open
    open ──(cooldown over; the next request takes the one probe)──> half-open
    half-open ──(the probe succeeds)──> closed
    half-open ──(the probe fails)──> open, with a longer cooldown (doubled, capped)

Only provider failures count: a connect error, a timeout, a broken answer, HTTP 408, 429 or 5xx.
A client's own error (another 4xx) and a client that hangs up count for nothing. A 429 opens the
circuit at once for the upstream's ``Retry-After`` (or the configured rate-limit cooldown).
While open, late answers of requests let through before it opened change nothing: only the
probe, a successful health check or a reset close the circuit.

State lives in memory, per process, keyed by provider id, so it survives snapshot rebuilds. All
transitions are synchronous (no ``await`` between test and set), which is what makes "exactly one
probe in half-open" hold under concurrent requests on one event loop.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
# Transitions are rare (a trip, a probe, a recovery), so each one is logged.
log = logging.getLogger("provider_router.circuit")


@dataclass(frozen=True)
class BreakerPolicy:
    """When a provider's circuit opens and for how long. Durations in seconds."""

    failure_threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    rate_limit_cooldown_s: float = 10.0


class Breaker:
    """The circuit of one provider."""

    def __init__(
        self,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        name: str = "?",
    ):
        self.policy = policy
        self._clock = clock
        self.name = name  # the provider id, for log lines
        self.state = CLOSED
        self.failures: deque[float] = deque()
        self.trips = 0  # consecutive openings without a success; grows the cooldown
        self.opened_until = 0.0  # monotonic
        self.probing = False
        self._probe_owner: object = None
        self.last_error: str | None = None
        self.last_error_at: int | None = None  # Unix ms
        # What the last failure says about the provider's setup ("credential rejected", "model
        # not found"), until it succeeds again.
        self.problem: str | None = None

    def allow(self, owner: object = None) -> bool:
        """May a request go to this provider now? In half-open, only the first caller may;
        ``owner`` (the request) is remembered so that only it can :meth:`release` the probe."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() < self.opened_until:
                return False
            self.state = HALF_OPEN
            self.probing = False
            log.info("Circuit of provider %r half-open: the next request probes it.", self.name)
        if self.probing:
            return False
        self.probing, self._probe_owner = True, owner
        return True

    def retry_in(self) -> float:
        """Seconds until this provider may be tried again (0 when it may be tried now)."""
        if self.state == OPEN:
            return max(0.0, self.opened_until - self._clock())
        return 0.0

    def success(self) -> None:
        """An attempt succeeded. While open, that is a late answer to a request let through
        before the circuit opened: only the half-open probe (or a health check) may close it."""
        if self.state == OPEN:
            return
        self.close()

    def close(self) -> None:
        if self.state != CLOSED:
            log.info("Circuit of provider %r closed: it answered again.", self.name)
        self.problem = None
        self.state = CLOSED
        self.failures.clear()
        self.trips = 0
        self.probing = False

    def release(self, owner: object = None) -> None:
        """The request let through ended without a verdict (the client left, or its own 4xx).

        Only the probe's own request frees the probe; any other request's release is a no-op,
        so a request from before the circuit opened cannot let a second probe through."""
        if self.probing and self._probe_owner is owner:
            self.probing, self._probe_owner = False, None

    def failure(
        self,
        error: str,
        *,
        retry_after: float | None = None,
        owner: object = None,
        problem: str | None = None,
    ) -> None:
        now = self._clock()
        self.last_error, self.last_error_at = error, int(time.time() * 1000)
        self.problem = problem
        if self.state == OPEN:
            return  # a request let through before the circuit opened: already counted against
        if self.state == HALF_OPEN:
            # Only the probe's verdict counts: a late failure of a request from before the
            # circuit opened must not reopen it under a probe that may still succeed.
            if self._probe_owner is owner:
                self._open(now, retry_after)
            return
        self.failures.append(now)
        while self.failures and self.failures[0] <= now - self.policy.window_s:
            self.failures.popleft()
        if len(self.failures) >= self.policy.failure_threshold:
            self._open(now, retry_after)

    def rate_limited(self, error: str, retry_after: float | None) -> None:
        """A 429: cool down at once, for as long as the upstream asked."""
        now = self._clock()
        self.last_error, self.last_error_at = error, int(time.time() * 1000)
        wait = self.policy.rate_limit_cooldown_s if retry_after is None else retry_after
        if self.state != OPEN:
            log.warning(
                "Circuit of provider %r opened for %.1f s: rate-limited upstream (%s).",
                self.name, min(wait, self.policy.max_cooldown_s), error,
            )  # fmt: skip
        self.state = OPEN
        self.probing = False
        self.opened_until = max(self.opened_until, now + min(wait, self.policy.max_cooldown_s))

    def reset(self) -> None:
        self.close()
        self.opened_until = 0.0
        self.last_error = self.last_error_at = None

    def _open(self, now: float, retry_after: float | None) -> None:
        cooldown = self.policy.cooldown_s * (2**self.trips)
        if retry_after is not None:
            cooldown = max(cooldown, retry_after)
        self.trips = min(self.trips + 1, 30)
        why = "its probe failed" if self.state == HALF_OPEN else (
            f"{len(self.failures)} failures within {self.policy.window_s:g} s"
        )  # fmt: skip
        self.state = OPEN
        self.probing = False
        # The failures stay (shown as recent_failures while open); closing clears them.
        self.opened_until = now + min(cooldown, self.policy.max_cooldown_s)
        log.warning(
            "Circuit of provider %r opened for %.1f s (%s; trip %d): %s",
            self.name, min(cooldown, self.policy.max_cooldown_s), why, self.trips,
            self.last_error,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The state for the API; ``cooldown_until`` in Unix milliseconds (null when closed)."""
        now = self._clock()
        window_start = now - self.policy.window_s
        state, until = self.state, None
        if state == OPEN and now >= self.opened_until:
            state = HALF_OPEN  # the next request will be the probe
        elif state == OPEN:
            until = int((time.time() + (self.opened_until - now)) * 1000)
        return {
            "state": state,
            "cooldown_until": until,
            "recent_failures": sum(1 for t in self.failures if t > window_start),
            "trips": self.trips,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "problem": self.problem,
        }


class Breakers:
    """The breakers of every provider, created on first use."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self._clock = clock
        self._by_provider: dict[str, Breaker] = {}

    def get(self, provider_id: str) -> Breaker:
        breaker = self._by_provider.get(provider_id)
        if breaker is None:
            breaker = self._by_provider[provider_id] = self.new_breaker(provider_id)
        return breaker

    def new_breaker(self, provider_id: str) -> Breaker:
        """The breaker a provider starts with (a subclass may keep its state elsewhere)."""
        return Breaker(self.policy, self._clock, provider_id)

    def peek(self, provider_id: str) -> Breaker | None:
        return self._by_provider.get(provider_id)

    def items(self) -> list[tuple[str, Breaker]]:
        return list(self._by_provider.items())

    def reset(self, provider_id: str) -> None:
        self._by_provider.pop(provider_id, None)
