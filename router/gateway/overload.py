"""Telling the operator that the proxy itself is at a limit, without flooding the log.

When every upstream connection of a provider is busy, or the process has no file descriptor
left, each request that hits the limit is answered 503 ``gateway_overloaded``; the log gets one
warning per limit per interval, naming the limit and how many requests it turned away since the
last one.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("provider_router.overload")

__all__ = ["OverloadLog"]


class OverloadLog:
    """At most one warning per limit every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._missed: dict[str, int] = {}

    def report(self, limit: str, message: str) -> None:
        """One request was turned away by ``limit`` (a setting's or resource's name)."""
        now = time.monotonic()
        last = self._last.get(limit)
        if last is not None and now - last < self.interval_s:
            self._missed[limit] = self._missed.get(limit, 0) + 1
            return
        self._last[limit] = now
        missed = self._missed.pop(limit, 0)
        also = f" ({missed} more request(s) since the last warning)" if missed else ""
        log.warning(
            "provider-router is at its limit %s: requests that hit it are not sent upstream "
            "(503 gateway_overloaded when no other provider takes them)%s. %s",
            limit,
            also,
            message,
        )
