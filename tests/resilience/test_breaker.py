"""The circuit breaker and the rate limiter, driven by a fake clock (no waiting, no sockets)."""

from __future__ import annotations

import pytest

from router.errors import UpstreamConnectError, UpstreamStatusError, UpstreamUnsupported
from router.resilience.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerPolicy
from router.resilience.policy import Resilience
from router.resilience.ratelimit import Limits, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = BreakerPolicy(
    failure_threshold=3, window_s=10, cooldown_s=5, max_cooldown_s=12, rate_limit_cooldown_s=7
)


def status(code: int, retry_after: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(f"HTTP {code}", status_code=code, body=b"", retry_after=retry_after)


def test_full_cycle_closed_open_half_open_closed() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    breaker.failure("a")
    breaker.failure("b")
    assert (breaker.state, breaker.allow()) == (CLOSED, True)
    breaker.failure("c")
    assert breaker.state == OPEN
    assert breaker.as_dict()["recent_failures"] == 3  # why it opened, visible while open
    assert breaker.allow() is False
    assert breaker.retry_in() == pytest.approx(5)
    assert breaker.as_dict()["cooldown_until"] is not None
    assert breaker.as_dict()["last_error"] == "c"

    clock.now += 5
    assert breaker.as_dict()["state"] == HALF_OPEN
    assert breaker.allow() is True  # the one probe
    assert breaker.state == HALF_OPEN
    assert [breaker.allow() for _ in range(5)] == [False] * 5
    breaker.success()
    assert (breaker.state, breaker.allow(), breaker.trips) == (CLOSED, True, 0)


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(5):
        breaker.failure("slow")
        clock.now += 6  # never three within 10 s
    assert breaker.state == CLOSED
    assert breaker.as_dict()["recent_failures"] == 1


def test_a_failed_probe_reopens_with_a_growing_capped_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(3):
        breaker.failure("down")
    cooldowns = []
    for _ in range(4):
        cooldowns.append(breaker.retry_in())
        clock.now += breaker.retry_in()
        assert breaker.allow() is True
        breaker.failure("still down")
        assert breaker.state == OPEN
    assert cooldowns == [5, 10, 12, 12]


def test_a_probe_without_verdict_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(3):
        breaker.failure("down")
    clock.now += 5
    assert breaker.allow() is True
    breaker.release()  # the client hung up, or the answer was the client's own 4xx
    assert breaker.allow() is True
    assert breaker.allow() is False


def test_429_cools_down_at_once_for_retry_after_or_the_default() -> None:
    clock = Clock()
    resilience = Resilience()
    resilience.breakers = type(resilience.breakers)(POLICY, clock)
    resilience.failed("p", status(429, retry_after=9))
    breaker = resilience.breakers.get("p")
    assert (breaker.state, breaker.retry_in()) == (OPEN, 9)
    resilience.failed("q", status(429))
    assert resilience.breakers.get("q").retry_in() == 7


def test_client_errors_and_unsupported_never_count() -> None:
    resilience = Resilience()
    resilience.breakers = type(resilience.breakers)(POLICY, Clock())
    for _ in range(10):
        resilience.failed("p", status(400))
        resilience.failed("p", status(422))
        resilience.failed("p", UpstreamUnsupported("no embeddings"))
    assert resilience.state("p", None)["circuit"]["state"] == CLOSED
    for _ in range(3):
        resilience.failed("p", UpstreamConnectError("refused"))
    assert resilience.state("p", None)["circuit"]["state"] == OPEN
    resilience.reset("p")
    assert resilience.state("p", None)["circuit"] == {
        "state": "closed",
        "cooldown_until": None,
        "recent_failures": 0,
        "trips": 0,
        "last_error": None,
        "last_error_at": None,
        "problem": None,
    }


def test_rpm_limit_counts_a_sliding_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(rpm=3)
    assert [limiter.acquire("k", limits) for _ in range(3)] == [None, None, None]
    clock.now += 20
    assert limiter.acquire("k", limits) == pytest.approx(40)
    clock.now += 40
    assert limiter.acquire("k", limits) is None
    assert limiter.acquire("other", limits) is None  # keys count apart


def test_rpd_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(rpd=2)
    assert limiter.acquire("k", limits) is None
    clock.now += 3600
    assert limiter.acquire("k", limits) is None
    wait = limiter.acquire("k", limits)
    assert wait == pytest.approx(86_400 - 3600)
    clock.now += 86_400 - 3600
    assert limiter.acquire("k", limits) is None


def test_tpm_limit_waits_until_enough_tokens_leave_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = Limits(tpm=100)
    assert limiter.acquire("k", limits) is None
    limiter.add_tokens("k", 60)
    clock.now += 10
    assert limiter.acquire("k", limits) is None
    limiter.add_tokens("k", 50)
    assert limiter.usage("k", limits) == {"tokens_last_minute": 110}
    assert limiter.acquire("k", limits) == pytest.approx(50)  # the first 60 leave at +60 s
    clock.now += 50
    assert limiter.acquire("k", limits) is None


def test_no_limits_never_waits() -> None:
    limiter = RateLimiter(Clock())
    assert all(limiter.acquire("k", None) is None for _ in range(1000))
    assert Limits.from_mapping(None) is None
    assert Limits.from_mapping({"rpm": 5}) == Limits(rpm=5)


def test_late_answers_of_requests_let_through_before_opening_change_nothing() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(3):
        breaker.failure("down")
    until = breaker.retry_in()
    breaker.failure("an older request failing late")  # no longer cooldown, no extra trip
    breaker.success()  # an older request succeeding late does not close it either
    assert (breaker.state, breaker.trips, breaker.retry_in()) == (OPEN, 1, until)
    assert breaker.as_dict()["last_error"] == "an older request failing late"
    breaker.close()  # what a successful health check does
    assert breaker.state == CLOSED


def test_only_the_probe_request_can_free_the_probe() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    early, probe, third = object(), object(), object()
    assert breaker.allow(early) is True  # let through while closed
    for _ in range(3):
        breaker.failure("down")
    clock.now += 5
    assert breaker.allow(probe) is True
    breaker.release(early)  # the early request's client hangs up: the probe stays taken
    assert breaker.allow(third) is False
    breaker.release(probe)
    assert breaker.allow(third) is True


def test_a_late_failure_of_an_older_request_does_not_override_the_probe() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    early, probe = object(), object()
    assert breaker.allow(early) is True  # a long stream let through while closed
    for _ in range(3):
        breaker.failure("down")
    clock.now += 5
    assert breaker.allow(probe) is True
    breaker.failure("the early stream breaks off late", owner=early)
    assert (breaker.state, breaker.trips) == (HALF_OPEN, 1)  # the probe is still out
    breaker.success()  # the probe's answer
    assert breaker.state == CLOSED


def test_a_success_clears_the_failure_count_as_documented() -> None:
    breaker = Breaker(POLICY, Clock())
    for _ in range(4):
        breaker.failure("flaky")
        breaker.failure("flaky")
        breaker.success()
    assert (breaker.state, breaker.as_dict()["recent_failures"]) == (CLOSED, 0)
    for _ in range(3):
        breaker.failure("down")
    assert breaker.state == OPEN


@pytest.mark.parametrize(
    ("code", "problem"),
    [(401, "credential rejected"), (403, "credential rejected"), (404, "model not found")],
)
def test_a_provider_fault_counts_and_names_the_problem_until_it_answers(
    code: int, problem: str
) -> None:
    """An upstream 401/403/404 says the provider is misconfigured: it counts, and the state
    says why, until the provider answers again."""
    resilience = Resilience()
    resilience.breakers = type(resilience.breakers)(POLICY, Clock())
    for _ in range(3):
        resilience.failed("p", status(code))
    circuit = resilience.state("p", None)["circuit"]
    assert circuit["state"] == OPEN and circuit["problem"] == problem
    assert problem in circuit["last_error"]
    resilience.breakers.get("p").close()
    assert resilience.state("p", None)["circuit"]["problem"] is None


def test_usage_is_counted_for_each_limit_set_and_null_without_limits() -> None:
    resilience = Resilience()
    assert resilience.state("p", None)["usage"] is None
    assert resilience.state("p", {})["usage"] is None
    limits = Limits(rpm=5, tpm=100)
    for _ in range(3):
        assert resilience.limiter.acquire("provider:p", limits) is None
    resilience.limiter.add_tokens("provider:p", 42)
    usage = resilience.state("p", {"rpm": 5, "tpm": 100})["usage"]
    assert usage == {"requests_last_minute": 3, "tokens_last_minute": 42}
