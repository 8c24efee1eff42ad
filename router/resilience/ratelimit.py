"""Rate limits counted in memory: requests per minute and per day, tokens per minute.

The limiter is generic over a string key, so the same object counts providers (``"provider:x"``)
and, later, client keys. Windows slide: a request counts for exactly 60 s (or 24 h) after it was
let through, so a limit of 60 rpm never lets 61 requests through in any 60 s span.

Counting is exact within one process and per process: with several server processes each one
counts alone, so N processes may together let through up to N times a limit. Run one process per
database (or divide limits by the number of processes) until a shared backend exists.

Example::

    limiter = RateLimiter()
    wait = limiter.acquire("provider:openai", Limits(rpm=60))
    if wait is not None:
        ...  # at its limit: skip it, or answer 429 with Retry-After: ceil(wait)
    ...
    limiter.add_tokens("provider:openai", usage.total_tokens)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MINUTE = 60.0
DAY = 86_400.0


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Limits | None:
        """From a provider's ``limits`` object (``{"rpm": 60, "rpd": 1000, "tpm": 90000}``)."""
        if not data:
            return None
        found = cls(data.get("rpm"), data.get("rpd"), data.get("tpm"))
        return found if found != cls() else None


class _Window:
    __slots__ = ("day", "minute", "token_total", "tokens")

    def __init__(self) -> None:
        self.minute: deque[float] = deque()
        self.day: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_total = 0

    def prune(self, now: float) -> None:
        while self.minute and self.minute[0] <= now - MINUTE:
            self.minute.popleft()
        while self.day and self.day[0] <= now - DAY:
            self.day.popleft()
        while self.tokens and self.tokens[0][0] <= now - MINUTE:
            self.token_total -= self.tokens.popleft()[1]


class RateLimiter:
    """Sliding-window counters per key. Not thread-safe; one event loop uses it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def acquire(self, key: str, limits: Limits | None) -> float | None:
        """Count one request for ``key`` and return None, or return the seconds to wait when
        ``key`` is at one of its limits (nothing is counted then)."""
        if limits is None:
            return None
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        window.prune(now)
        waits = []
        if limits.rpm is not None and len(window.minute) >= limits.rpm:
            waits.append(window.minute[-limits.rpm] + MINUTE - now)
        if limits.rpd is not None and len(window.day) >= limits.rpd:
            waits.append(window.day[-limits.rpd] + DAY - now)
        if limits.tpm is not None and window.token_total >= limits.tpm:
            waits.append(self._tokens_free_in(window, limits.tpm, now))
        if waits:
            return max(max(waits), 0.001)
        if limits.rpm is not None:
            window.minute.append(now)
        if limits.rpd is not None:
            window.day.append(now)
        return None

    def add_tokens(self, key: str, n: int | None) -> None:
        """Count ``n`` tokens used by ``key`` now (after a request, when usage is known)."""
        if not n or n < 0:
            return
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        window.tokens.append((self._clock(), n))
        window.token_total += n

    def usage(self, key: str, limits: Limits) -> dict[str, int]:
        """Current counts, for the health API: one for each limit set (only those are kept)."""
        window = self._windows.get(key)
        if window is not None:
            window.prune(self._clock())
        counts = {}
        if limits.rpm is not None:
            counts["requests_last_minute"] = len(window.minute) if window else 0
        if limits.rpd is not None:
            counts["requests_last_day"] = len(window.day) if window else 0
        if limits.tpm is not None:
            counts["tokens_last_minute"] = window.token_total if window else 0
        return counts

    @staticmethod
    def _tokens_free_in(window: _Window, tpm: int, now: float) -> float:
        # Tokens leave the window oldest first; wait until the total drops below the limit.
        total = window.token_total
        for at, n in window.tokens:
            total -= n
            if total < tpm:
                return at + MINUTE - now
        return MINUTE
