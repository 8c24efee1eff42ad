"""The routing snapshot: which providers may serve which model, in which order.

A :class:`Snapshot` is immutable and built from the database by :mod:`router.gateway.snapshots`; the
request path only ever reads it, so choosing candidates never touches the database.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.base import Adapter
from router.errors import ModelNotFound, NoProviderAvailable
from router.resilience.ratelimit import Limits
from router.resilience.timeouts import Timeouts


@dataclass(frozen=True)
class Candidate:
    """One provider that can serve one model."""

    provider_id: str
    adapter: Adapter = field(repr=False)
    upstream_model: str
    priority: int
    weight: int
    input_cost_per_1k: float | None = None
    output_cost_per_1k: float | None = None
    currency: str = "USD"
    limits: Limits | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        if self.input_cost_per_1k is None and self.output_cost_per_1k is None:
            return None
        if prompt_tokens is None and completion_tokens is None:
            return None
        return ((prompt_tokens or 0) * (self.input_cost_per_1k or 0.0)) / 1000 + (
            (completion_tokens or 0) * (self.output_cost_per_1k or 0.0)
        ) / 1000


@dataclass(frozen=True)
class Snapshot:
    """Routes by model name.

    ``routes`` holds, per model, the enabled providers in the order they are tried; ``linked``
    holds every non-archived provider linked to a model, enabled or not, for pinning and for
    telling "no such model" (404) from "no provider available" (503).
    """

    version: int = 0
    routes: Mapping[str, tuple[Candidate, ...]] = field(default_factory=dict)
    linked: Mapping[str, Mapping[str, Candidate]] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    models: Mapping[str, int] = field(default_factory=dict)  # model id -> created (Unix s)

    def candidates(self, model: str) -> tuple[Candidate, ...]:
        """The candidates for ``model`` in the order to try them.

        ``"<provider_id>/<model>"`` pins one provider when no model has that exact name.
        Raises :class:`ModelNotFound` or :class:`NoProviderAvailable`.
        """
        found = self.routes.get(model)
        if found:
            return found
        if model not in self.linked and "/" in model:
            provider_id, _, rest = model.partition("/")
            pinned = self.linked.get(rest, {}).get(provider_id)
            if pinned is not None:
                if provider_id in self.disabled:
                    raise NoProviderAvailable(
                        f"Provider {provider_id!r} is disabled; enable it or ask for {rest!r}."
                    )
                return (pinned,)
        if model in self.linked or model in self.models:
            raise NoProviderAvailable(
                f"No enabled provider serves model {model!r} right now.", param="model"
            )
        raise ModelNotFound(f"The model {model!r} does not exist.", param="model")


def order(candidates: list[Candidate]) -> tuple[Candidate, ...]:
    """Highest priority first; within a tier, heavier weight first, then by id (stable)."""
    return tuple(sorted(candidates, key=lambda c: (-c.priority, -c.weight, c.provider_id)))


def spread(candidates: tuple[Candidate, ...], rng: random.Random) -> list[Candidate]:
    """The order to try ``candidates`` (already in :func:`order`) for one request.

    Tiers stay in priority order. Inside a tier the order is a weighted random permutation
    (Efraimidis-Spirakis: sort by ``u ** (1 / weight)``), so a provider comes first with
    probability ``weight / tier total`` and the rest of the tier follows as its fallbacks.
    Weighted random rather than smooth weighted round-robin: it keeps no counter, so it needs no
    shared state between requests, snapshot rebuilds or server processes, and it gives every
    request a whole fallback order in one pass.
    """
    result: list[Candidate] = []
    start, n = 0, len(candidates)
    while start < n:
        end = start + 1
        priority = candidates[start].priority
        while end < n and candidates[end].priority == priority:
            end += 1
        if end - start == 1:
            result.append(candidates[start])
        else:
            tier = candidates[start:end]
            keyed = sorted(tier, key=lambda c: rng.random() ** (1.0 / c.weight), reverse=True)
            result.extend(keyed)
        start = end
    return result
