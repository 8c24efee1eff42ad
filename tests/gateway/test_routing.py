"""Selection order: tiers by priority, weighted random inside a tier."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from router.gateway.routing import Candidate, order, spread


def candidate(provider_id: str, priority: int = 0, weight: int = 1) -> Candidate:
    adapter: Any = None
    return Candidate(provider_id, adapter, "m", priority, weight)


def test_weights_spread_first_choices_within_tolerance() -> None:
    tier = order([candidate("a", weight=1), candidate("b", weight=3), candidate("c", weight=6)])
    rng = random.Random(1234)
    firsts = Counter(spread(tier, rng)[0].provider_id for _ in range(20_000))
    # Expected shares 10 % / 30 % / 60 %; 1.5 points is over 5 standard deviations here.
    for provider_id, share in {"a": 0.1, "b": 0.3, "c": 0.6}.items():
        assert abs(firsts[provider_id] / 20_000 - share) < 0.015, firsts


def test_every_provider_once_and_tiers_in_priority_order() -> None:
    candidates = order(
        [
            candidate("low", priority=1),
            candidate("high-a", priority=5, weight=2),
            candidate("high-b", priority=5),
            candidate("mid", priority=3),
        ]
    )
    rng = random.Random(7)
    seen_orders = set()
    for _ in range(200):
        tried = [c.provider_id for c in spread(candidates, rng)]
        assert sorted(tried) == ["high-a", "high-b", "low", "mid"]
        assert set(tried[:2]) == {"high-a", "high-b"}
        assert tried[2:] == ["mid", "low"]
        seen_orders.add(tuple(tried[:2]))
    assert len(seen_orders) == 2  # both members of the top tier get to go first
