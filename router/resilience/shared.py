"""Rate limits and circuits shared by every replica through Redis (``redis.url``).

With several provider-router processes behind a load balancer, per-process counting lets a
provider limited to 60 rpm receive 60 x N, and a provider one replica gave up on keeps getting
traffic from the others. With ``redis.url`` set, :class:`SharedState` counts and decides in Redis
instead, each check one Lua script (:mod:`router.resilience.lua`), so one round trip, which the
calls of one event-loop turn share (:mod:`router.resilience.scripts`):

- admitting a candidate (its circuit, then its rpm/rpd/tpm) is one script per candidate tried;
  a client key's limits are one more script, sent in the same round trip as the first
  admission (and that admission is taken back when the client is over its limit);
- a provider failure, a 429, a probe's verdict, a usage report and a reset are written in the
  background (never awaited by the request);
- the circuit each process shows (API, UI, database copy) is a mirror of Redis's, refreshed by
  every answer and by :meth:`SharedState.refresh` each reload interval.

Redis unreachable (refused, or no answer within ``redis.timeout_ms``): ``redis.on_failure =
"local"`` counts per process (the local breakers and limiter, which the shared ones mirror) and
logs once; ``"closed"`` answers 503. Either way Redis is left alone for a second after a failure,
so a dead Redis costs at most one timeout per second, not one per request; ``/health`` shows the
state (:meth:`SharedState.status`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.errors import NoProviderAvailable
from router.redact import public_url, remember
from router.resilience import lua
from router.resilience.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerPolicy, Breakers
from router.resilience.ratelimit import Limits, RateLimiter
from router.resilience.scripts import ScriptRunner

log = logging.getLogger("provider_router.shared")

ON_FAILURE = ("local", "closed")
# After a failed call, how long Redis is left alone before the next request tries it again.
RETRY_AFTER_S = 1.0


class SharedStateUnavailable(NoProviderAvailable):
    """Redis is unreachable and ``redis.on_failure`` is "closed"."""

    default_code = "shared_state_unavailable"


class SharedState:
    """One process's connection to the shared state, and what it does when Redis is away."""

    def __init__(
        self,
        url: str,
        *,
        policy: BreakerPolicy,
        on_failure: str = "local",
        timeout_s: float = 0.5,
        prefix: str = "provider-router:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"redis.on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
        password = urlsplit(url).password
        if password:
            remember(password)
        self.url = public_url(url)
        self.policy = policy
        self.on_failure = on_failure
        self.timeout_s = timeout_s
        self.prefix = prefix
        self._clock = clock
        self.redis: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            decode_responses=True,
        )
        self.runner = ScriptRunner(
            self.redis,
            {
                "admit": lua.ADMIT, "tokens": lua.ADD_TOKENS, "failure": lua.FAILURE,
                "rate_limited": lua.RATE_LIMITED, "success": lua.SUCCESS,
                "release": lua.RELEASE, "view": lua.VIEW, "usage": lua.USAGE,
                "refund": lua.REFUND,
            },
        )  # fmt: skip
        # Members of the windows must be unique across replicas and calls.
        self._instance = os.urandom(6).hex()
        self._seq = itertools.count()
        self._background: set[asyncio.Task[Any]] = set()
        self.up = True
        self.down_since: int | None = None  # Unix ms of the current outage
        self.failures = 0  # calls that failed, since start
        self._retry_at = 0.0
        self.usage_seen: dict[str, dict[str, int]] = {}
        self._keys: dict[str, list[str]] = {}  # one entry per provider and client key seen

    # -- keys -------------------------------------------------------------------------------

    def keys(self, subject: str) -> list[str]:
        """circuit, failures, minute, day, tokens, tokens_total of ``subject``."""
        found = self._keys.get(subject)
        if found is None:
            base = f"{self.prefix}{{{subject}}}"
            parts = ("circuit", "failures", "m", "d", "t", "tt")
            found = self._keys[subject] = [f"{base}:{part}" for part in parts]
        return found

    def owner_token(self, owner: object) -> str:
        request_id = getattr(owner, "id", None)
        return f"{self._instance}:{request_id if request_id is not None else id(owner)}"

    def nonce(self) -> str:
        return f"{self._instance}:{next(self._seq)}"

    # -- calls ------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether to try Redis now: it answered last time, or its second off is over."""
        return self.up or self._clock() >= self._retry_at

    async def call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis call, bounded by ``redis.timeout_ms``; raise :class:`RedisDown`."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self._went_down(exc)
            raise RedisDown from exc
        if not self.up:
            log.warning("Redis at %s answers again: limits and circuits are shared", self.url)
            self.up, self.down_since = True, None
        return result

    def _went_down(self, exc: BaseException) -> None:
        self.failures += 1
        self._retry_at = self._clock() + RETRY_AFTER_S
        if self.up:
            self.up, self.down_since = False, int(time.time() * 1000)
            what = "counting per process" if self.on_failure == "local" else "answering 503"
            log.error(
                "Redis at %s is unreachable (%s); %s until it answers (redis.on_failure = %r)",
                self.url, type(exc).__name__, what, self.on_failure,
            )  # fmt: skip

    def refuse(self) -> SharedStateUnavailable:
        return SharedStateUnavailable(
            # No address: clients have no business knowing where Redis runs (the log says).
            "The shared rate-limit and circuit state (Redis) is unreachable and "
            "redis.on_failure is 'closed'; retry later.",
        )

    def background(self, make: Callable[[], Awaitable[Any]], then: Any = None) -> None:
        """Run a write the request does not wait for; a failure marks Redis down, no more."""
        if not self.available:
            return

        async def run() -> None:
            try:
                result = await self.call(make)
            except RedisDown:
                return
            if then is not None:
                then(result)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the background writes (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.runner.drain()

    async def aclose(self) -> None:
        await self.drain()
        await self.redis.aclose()

    def status(self) -> dict[str, Any]:
        """For ``/health`` and metrics: where limits and circuits are kept, and whether it works
        (no address: ``/health`` needs no credentials)."""
        return {
            "backend": "redis",
            "state": "ok" if self.up else "unreachable",
            "on_failure": self.on_failure,
            "down_since": self.down_since,
            "failed_calls": self.failures,
        }

    # -- the scripts ------------------------------------------------------------------------

    def start_admit(
        self, subject: str, limits: Limits | None, owner: object, lease_s: float, nonce: str
    ) -> asyncio.Future[Any]:
        """Queue one check of ``subject`` (sent when this loop turn ends, with the other calls
        of the turn); await it with :meth:`call`. Its answer: {verdict, wait ms, probe, circuit
        view...}. ``nonce`` names the admission, for :meth:`refund`."""
        rpm = rpd = tpm = 0
        if limits is not None:
            rpm, rpd, tpm = limits.rpm or 0, limits.rpd or 0, limits.tpm or 0
        args = (
            rpm, rpd, tpm, self.owner_token(owner), int(lease_s * 1000), nonce,
            int(self.policy.window_s * 1000),
        )  # fmt: skip
        return self.runner.run("admit", self.keys(subject), args)

    async def admit(
        self, subject: str, limits: Limits | None, owner: object, lease_s: float
    ) -> list[Any]:
        """One check of ``subject``, awaited; raises :class:`RedisDown`."""
        nonce = self.nonce()
        found: list[Any] = await self.call(
            lambda: self.start_admit(subject, limits, owner, lease_s, nonce)
        )
        return found

    def refund(self, subject: str, nonce: str, owner: object) -> None:
        """Take back admission ``nonce`` of ``owner`` (its request did not go after all)."""
        circuit, _, minute, day, _, _ = self.keys(subject)
        args = (nonce, self.owner_token(owner))
        self.background(lambda: self.runner.run("refund", [circuit, minute, day], args))

    def add_tokens(self, subject: str, n: int) -> None:
        keys = self.keys(subject)[4:]
        args = (n, self.nonce())
        self.background(lambda: self.runner.run("tokens", keys, args))

    def failure(
        self, breaker: SharedBreaker, error: str, retry_after: float | None, owner: object
    ) -> None:
        policy = self.policy
        args = (
            self.owner_token(owner), policy.failure_threshold, int(policy.window_s * 1000),
            int(policy.cooldown_s * 1000), int(policy.max_cooldown_s * 1000),
            -1 if retry_after is None else int(retry_after * 1000), error,
            int(time.time() * 1000), self.nonce(),
        )  # fmt: skip
        keys = self.keys(breaker.subject)[:2]
        self.background(lambda: self.runner.run("failure", keys, args), breaker.mirror)

    def rate_limited(self, breaker: SharedBreaker, error: str, wait_s: float) -> None:
        policy = self.policy
        args = (
            int(wait_s * 1000), int(policy.max_cooldown_s * 1000), error,
            int(time.time() * 1000), int(policy.window_s * 1000),
        )  # fmt: skip
        keys = self.keys(breaker.subject)[:2]
        self.background(lambda: self.runner.run("rate_limited", keys, args), breaker.mirror)

    def success(self, breaker: SharedBreaker) -> None:
        keys = self.keys(breaker.subject)[:2]
        window = int(self.policy.window_s * 1000)
        self.background(lambda: self.runner.run("success", keys, (window,)), breaker.mirror)

    def release(self, breaker: SharedBreaker, owner: object) -> None:
        keys = self.keys(breaker.subject)[:1]
        token = self.owner_token(owner)
        self.background(lambda: self.runner.run("release", keys, (token,)))

    def reset(self, subject: str) -> None:
        keys = self.keys(subject)[:2]
        self.background(lambda: self.redis.delete(*keys))

    async def refresh(self, breakers: SharedBreakers, subjects: list[str]) -> None:
        """Mirror the circuits and usage of ``subjects`` (provider ids) in one pipeline."""
        if not subjects or not self.available:
            return
        window = int(self.policy.window_s * 1000)

        async def read() -> list[Any]:
            calls = []
            for pid in subjects:
                keys = self.keys(f"provider:{pid}")
                calls.append(self.runner.run("view", keys[:2], (window,)))
                calls.append(self.runner.run("usage", keys[2:], ()))
            return await asyncio.gather(*calls)

        try:
            found = await self.call(read)
        except RedisDown:
            return
        for i, pid in enumerate(subjects):
            view, usage = found[2 * i], found[2 * i + 1]
            if view[0] != CLOSED or breakers.peek(pid) is not None:
                breaker = breakers.get(pid)
                if isinstance(breaker, SharedBreaker):
                    breaker.mirror(view)
            self.usage_seen[f"provider:{pid}"] = {
                "requests_last_minute": int(usage[0]),
                "requests_last_day": int(usage[1]),
                "tokens_last_minute": int(usage[2]),
            }


class RedisDown(Exception):
    """A Redis call failed or timed out (already logged and counted by :class:`SharedState`)."""


class SharedBreaker(Breaker):
    """A provider's circuit, decided in Redis and mirrored here.

    Every transition is applied locally too (the fallback when Redis is down) and sent to Redis
    in the background; the admission itself goes through :meth:`SharedState.admit`.
    """

    def __init__(self, shared: SharedState, provider_id: str, clock: Callable[[], float]):
        super().__init__(shared.policy, clock, provider_id)
        self.shared = shared
        self.subject = f"provider:{provider_id}"
        self.shared_failures = 0  # as Redis last said: a success clears them there

    def mirror(self, view: list[Any]) -> None:
        """Take the state Redis answered ``[state, until, now, trips, failures, error, at]``."""
        state, until, now, trips, failures = view[0], int(view[1]), int(view[2]), view[3], view[4]
        if isinstance(state, bytes):
            state = state.decode()
        self.shared_failures = int(failures)
        self.trips = int(trips)
        if view[5]:
            error = view[5]
            self.last_error = error.decode() if isinstance(error, bytes) else str(error)
            self.last_error_at = int(view[6]) or None
        if state == OPEN:
            self.opened_until = self._clock() + max(0, until - now) / 1000
            if self.state == CLOSED or (until > now and self.state == HALF_OPEN):
                self.state, self.probing = OPEN, False
        elif self.state != CLOSED:
            Breaker.close(self)

    def admitted_probe(self, owner: object) -> None:
        """Redis gave ``owner`` the cluster's one half-open probe."""
        self.state, self.probing, self._probe_owner = HALF_OPEN, True, owner

    def success(self) -> None:
        if self.state == OPEN:
            return  # a late answer (Breaker.success); Redis's SUCCESS script agrees
        before, failures = self.state, self.shared_failures
        # Not self.close(): that resets Redis unconditionally, and another replica may have
        # opened the circuit since this mirror was refreshed. The script checks first.
        Breaker.close(self)
        if before != CLOSED or failures:
            self.shared_failures = 0
            self.shared.success(self)

    def close(self) -> None:
        # A health check that passed (or a success, through success()): closed everywhere.
        was_closed = self.state == CLOSED and not self.shared_failures
        Breaker.close(self)
        if not was_closed:
            self.shared.reset(self.subject)

    def release(self, owner: object = None) -> None:
        held = self.probing and self._probe_owner is owner
        super().release(owner)
        if held:
            self.shared.release(self, owner)

    def failure(
        self,
        error: str,
        *,
        retry_after: float | None = None,
        owner: object = None,
        problem: str | None = None,
    ) -> None:
        # ``problem`` (what the failure says about the provider's setup) stays per process.
        super().failure(error, retry_after=retry_after, owner=owner, problem=problem)
        self.shared.failure(self, error, retry_after, owner)

    def rate_limited(self, error: str, retry_after: float | None) -> None:
        super().rate_limited(error, retry_after)
        wait = self.policy.rate_limit_cooldown_s if retry_after is None else retry_after
        self.shared.rate_limited(self, error, wait)


class SharedBreakers(Breakers):
    """The breakers of every provider, each a :class:`SharedBreaker`."""

    def __init__(self, shared: SharedState, clock: Callable[[], float] = time.monotonic):
        super().__init__(shared.policy, clock)
        self.shared = shared

    def new_breaker(self, provider_id: str) -> Breaker:
        return SharedBreaker(self.shared, provider_id, self._clock)

    def reset(self, provider_id: str) -> None:
        super().reset(provider_id)
        self.shared.reset(f"provider:{provider_id}")


class SharedLimiter(RateLimiter):
    """Token counts go to Redis too; the local counts are the fallback. Admission is
    :meth:`SharedState.admit`."""

    def __init__(self, shared: SharedState, clock: Callable[[], float] = time.monotonic):
        super().__init__(clock)
        self.shared = shared

    def add_tokens(self, key: str, n: int | None) -> None:
        super().add_tokens(key, n)
        if n and n > 0:
            self.shared.add_tokens(key, n)

    def usage(self, key: str, limits: Limits) -> dict[str, int]:
        seen = self.shared.usage_seen.get(key)
        if seen is None or not self.shared.up:
            return super().usage(key, limits)
        wanted = {
            "requests_last_minute": limits.rpm,
            "requests_last_day": limits.rpd,
            "tokens_last_minute": limits.tpm,
        }
        return {name: n for name, n in seen.items() if wanted[name] is not None}
