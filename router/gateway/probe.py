"""One cheap real call to a provider: is it up, and how fast does it answer?

Used by ``POST /v1/providers/{id}/test``, ``provider-router provider test`` and the background
health checks. The cheapest call an upstream offers is its model list; a type that cannot list
its models is asked for a one-token completion of ``model`` instead (that one may cost money,
which is why background checks are off by default for paid providers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from providers.base import Adapter
from router.errors import UpstreamError, UpstreamStatusError, UpstreamUnsupported

log = logging.getLogger("provider_router.probe")


PROBE_TIMEOUT_S = 10.0  # the default; health.timeout_ms sets it for checks


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: int
    status_code: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


async def probe(
    adapter: Adapter, model: str | None = None, *, timeout_s: float = PROBE_TIMEOUT_S
) -> ProbeResult:
    """Call the upstream once, for at most ``timeout_s``; never raises for an upstream failure
    (or an adapter bug), so one hanging provider cannot hold up a round of checks."""
    start = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - start) * 1000)

    try:
        async with asyncio.timeout(timeout_s):
            try:
                await adapter.list_models()
            except UpstreamUnsupported:
                if model is None:
                    raise
                body = {"model": model, "messages": [{"role": "user", "content": "ping"}]}
                await adapter.chat({**body, "max_tokens": 1}, model)
    except TimeoutError:
        return ProbeResult(False, elapsed(), None, f"no answer within {timeout_s:g} s")
    except UpstreamStatusError as exc:
        return ProbeResult(False, elapsed(), exc.status_code, exc.message)
    except UpstreamError as exc:
        return ProbeResult(False, elapsed(), None, exc.message)
    except Exception as exc:
        # An adapter bug fails this probe, not the whole health-check round it is part of.
        log.exception("Adapter of provider %r failed its probe", adapter.provider_id)
        return ProbeResult(False, elapsed(), None, f"adapter error {type(exc).__name__}")
    return ProbeResult(True, elapsed(), 200)
