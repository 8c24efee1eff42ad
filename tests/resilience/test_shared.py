"""Shared rate limits and circuits against the real Redis (scripts/test-services).

Two :class:`Resilience` objects on one Redis stand for two replicas; each test has a prefix of
its own, so tests never see each other's counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.errors import RateLimited
from router.redact import public_url
from router.resilience.breaker import CLOSED, HALF_OPEN, OPEN
from router.resilience.policy import Resilience
from router.resilience.ratelimit import Limits
from router.resilience.shared import SharedBreaker, SharedStateUnavailable
from router.settings import Settings, SettingsError, load_settings
from router.store.client_keys import ClientKey
from tests.helpers import app_client, make_settings, require_redis
from tests.ui.test_ui import sign_in


class Owner:
    """A request, as the attempt loop passes one (only its id matters here)."""

    def __init__(self, n: int) -> None:
        self.id = f"req_{n}"


def replica(url: str, prefix: str, **settings: Any) -> Resilience:
    values: dict[str, Any] = {
        "redis_url": url,
        "redis_prefix": prefix,
        "breaker_failure_threshold": 3,
        # Long enough that a loaded machine does not see it end between two steps of a test.
        "breaker_cooldown_ms": 1000,
        # Generous: a loaded machine must not look like a Redis outage (tests of the timeout
        # set their own).
        "redis_timeout_ms": 3000,
        **settings,
    }
    return Resilience.from_settings(Settings(**values))


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[Resilience, Resilience]]:
    prefix = f"test-{os.urandom(6).hex()}:"
    a, b = replica(redis_url, prefix), replica(redis_url, prefix)
    yield a, b
    assert a.shared is not None
    keys = [key async for key in a.shared.redis.scan_iter(f"{prefix}*")]
    if keys:
        await a.shared.redis.delete(*keys)
    await a.aclose()
    await b.aclose()


async def admit_many(replicas: list[Resilience], n: int, limits: Limits | None) -> list[Any]:
    owners = [Owner(i) for i in range(n)]
    return await asyncio.gather(
        *(
            replicas[i % len(replicas)].admit("p", limits, owner, 5)
            for i, owner in enumerate(owners)
        )
    )


async def test_an_rpm_limit_holds_across_replicas(pair: tuple[Resilience, Resilience]) -> None:
    verdicts = await admit_many(list(pair), 25, Limits(rpm=10))

    assert verdicts.count(None) == 10
    refused = [v for v in verdicts if v is not None]
    assert {reason for reason, _ in refused} == {"rate_limited"}
    # The first of the ten leaves the window a minute after it came in.
    assert all(55 < wait <= 60 for _, wait in refused)


async def test_rpd_counts_across_replicas(pair: tuple[Resilience, Resilience]) -> None:
    a, b = pair
    assert await a.admit("p", Limits(rpd=2), Owner(1), 5) is None
    assert await b.admit("p", Limits(rpd=2), Owner(2), 5) is None
    verdict = await a.admit("p", Limits(rpd=2), Owner(3), 5)
    assert verdict is not None and verdict[0] == "rate_limited"
    assert 86_000 < verdict[1] <= 86_400


async def test_tokens_reported_on_one_replica_limit_the_other(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    assert a.shared is not None
    assert await b.admit("p", Limits(tpm=1000), Owner(1), 5) is None
    a.limiter.add_tokens("provider:p", 600)
    a.limiter.add_tokens("provider:p", 500)
    await a.shared.drain()

    verdict = await b.admit("p", Limits(tpm=1000), Owner(2), 5)
    assert verdict is not None and verdict[0] == "rate_limited" and 0 < verdict[1] <= 60
    await a.refresh_shared(["p"])
    assert a.state("p", {"tpm": 1000})["usage"] == {"tokens_last_minute": 1100}


async def test_a_client_key_limit_holds_across_replicas(
    pair: tuple[Resilience, Resilience],
) -> None:
    key = ClientKey(id="k1", name="team", rpm_limit=3)
    outcomes = []
    for i in range(6):
        replica = pair[i % 2]
        try:
            await replica.admit("p", Limits(rpm=100), Owner(i), 5, replica.check_client(key))
            outcomes.append("ok")
        except RateLimited as exc:
            assert exc.retry_after is not None and 0 < exc.retry_after <= 60
            assert "Client key 'team'" in exc.message
            outcomes.append("429")
    assert outcomes == ["ok"] * 3 + ["429"] * 3
    # The provider's admissions of the three refused requests were taken back.
    a = pair[0]
    assert a.shared is not None
    await a.shared.drain()
    await a.refresh_shared(["p"])
    assert a.state("p", {"rpm": 100})["usage"] == {"requests_last_minute": 3}


async def test_a_client_check_shares_the_round_trip_of_the_first_admission(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, _ = pair
    assert a.shared is not None
    key = ClientKey(id="k2", name="team", rpm_limit=10, tpm_limit=10_000)
    await a.admit("p", Limits(rpm=100), Owner(0), 5, a.check_client(key))  # scripts loaded
    before = a.shared.runner.batches
    for i in range(1, 4):
        assert await a.admit("p", Limits(rpm=100), Owner(i), 5, a.check_client(key)) is None
    assert a.shared.runner.batches - before == 3  # one pipeline per request, not two


async def test_a_refused_client_gives_back_a_half_open_probe(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    key = ClientKey(id="k3", name="team", rpm_limit=1)
    await a.admit("q", None, Owner(0), 5, a.check_client(key))  # the key's one request
    await fail(a, 3)
    await asyncio.sleep(1.05)  # half-open
    with pytest.raises(RateLimited):
        await a.admit("p", None, Owner(1), 5, a.check_client(key))
    assert a.shared is not None
    await a.shared.drain()
    assert await b.admit("p", None, Owner(2), 5) is None  # the probe was free again


async def fail(res: Resilience, n: int, owner: object = None) -> None:
    from router.errors import UpstreamConnectError

    for _ in range(n):
        res.failed("p", UpstreamConnectError("Provider 'p': connection refused."), owner)
    assert res.shared is not None
    await res.shared.drain()


async def test_a_circuit_opened_on_one_replica_is_skipped_by_the_other(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 3)

    verdict = await b.admit("p", None, Owner(1), 5)
    assert verdict is not None and verdict[0] == "circuit_open"
    assert 0 < verdict[1] <= 1.0
    assert b.breakers.get("p").state == OPEN
    assert b.state("p", None)["circuit"]["last_error"] == "Provider 'p': connection refused."


async def test_failures_on_both_replicas_add_up(pair: tuple[Resilience, Resilience]) -> None:
    a, b = pair
    await fail(a, 2)
    await fail(b, 1)
    verdict = await a.admit("p", None, Owner(1), 5)
    assert verdict is not None and verdict[0] == "circuit_open"


async def test_exactly_one_probe_runs_across_the_cluster(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 3)
    await asyncio.sleep(1.05)  # the cooldown (1 s) is over: half-open

    owners = [Owner(i) for i in range(40)]
    verdicts = await asyncio.gather(
        *(pair[i % 2].admit("p", None, owner, 5) for i, owner in enumerate(owners))
    )
    admitted = [owners[i] for i, v in enumerate(verdicts) if v is None]
    assert len(admitted) == 1
    prober = pair[owners.index(admitted[0]) % 2]
    assert prober.breakers.get("p").state == HALF_OPEN

    # The probe succeeds: closed for everyone.
    prober.breakers.get("p").success()
    assert prober.shared is not None
    await prober.shared.drain()
    assert await a.admit("p", None, Owner(100), 5) is None
    assert await b.admit("p", None, Owner(101), 5) is None
    assert b.breakers.get("p").state == CLOSED


async def test_a_failed_probe_reopens_for_longer(pair: tuple[Resilience, Resilience]) -> None:
    a, b = pair
    await fail(a, 3)
    await asyncio.sleep(1.05)
    probe = Owner(1)
    assert await b.admit("p", None, probe, 5) is None
    # A late failure of some other request changes nothing; the probe's own reopens.
    await fail(a, 1, Owner(2))
    assert (await a.admit("p", None, Owner(3), 5) or ("",))[0] == "circuit_open"
    reopened_at = time.time() * 1000
    await fail(b, 1, probe)

    verdict = await a.admit("p", None, Owner(4), 5)
    assert verdict is not None and verdict[0] == "circuit_open"
    circuit = a.state("p", None)["circuit"]
    assert circuit["trips"] == 2
    # The cooldown doubled: 1 s, then 2 s from the probe's failure.
    assert 1900 <= circuit["cooldown_until"] - reopened_at <= 5000


async def test_a_probe_released_without_a_verdict_lets_the_next_request_probe(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 3)
    await asyncio.sleep(1.05)
    probe = Owner(1)
    assert await a.admit("p", None, probe, 5) is None
    assert (await b.admit("p", None, Owner(2), 5) or ("",))[0] == "circuit_open"

    a.breakers.get("p").release(probe)  # the client hung up
    assert a.shared is not None
    await a.shared.drain()
    assert await b.admit("p", None, Owner(3), 5) is None


async def test_a_probe_whose_replica_died_expires_with_its_lease(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 3)
    await asyncio.sleep(1.05)
    assert await a.admit("p", None, Owner(1), 1.0) is None  # and then nothing: a died
    assert (await b.admit("p", None, Owner(2), 5) or ("",))[0] == "circuit_open"
    await asyncio.sleep(1.05)
    assert await b.admit("p", None, Owner(3), 5) is None


async def test_a_late_success_does_not_close_an_open_circuit(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 3)
    b.breakers.get("p")  # b knows nothing yet: its breaker is closed
    await b.admit("p", None, Owner(1), 5)  # mirrors "open"
    b.breakers.get("p").success()  # a request let through before: ignored
    assert b.shared is not None
    await b.shared.drain()
    assert (await a.admit("p", None, Owner(2), 5) or ("",))[0] == "circuit_open"


async def test_a_success_on_a_stale_mirror_does_not_close_a_circuit_opened_elsewhere(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 2)  # a's mirror: closed, 2 recent failures
    await fail(b, 1)  # the third, on b: open
    assert a.breakers.get("p").state == CLOSED
    a.breakers.get("p").success()  # a request a let through before
    assert a.shared is not None
    await a.shared.drain()
    assert (await b.admit("p", None, Owner(1), 5) or ("",))[0] == "circuit_open"


async def test_a_success_clears_the_failures_counted_so_far(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 2)
    a.breakers.get("p").success()
    assert a.shared is not None
    await a.shared.drain()
    await fail(b, 2)  # 2, not 4: still closed
    assert await a.admit("p", None, Owner(1), 5) is None


async def test_an_upstream_429_cools_the_provider_down_everywhere(
    pair: tuple[Resilience, Resilience],
) -> None:
    from router.errors import UpstreamStatusError

    a, b = pair
    busy = UpstreamStatusError(
        "Provider 'p': HTTP 429.", status_code=429, body=b"{}", retry_after=2.0
    )
    a.failed("p", busy)
    assert a.shared is not None
    await a.shared.drain()
    verdict = await b.admit("p", None, Owner(1), 5)
    assert verdict is not None and verdict[0] == "circuit_open" and 0.5 < verdict[1] <= 2.0


async def test_a_reset_closes_the_circuit_everywhere(pair: tuple[Resilience, Resilience]) -> None:
    a, b = pair
    await fail(a, 3)
    assert (await b.admit("p", None, Owner(1), 5) or ("",))[0] == "circuit_open"
    b.reset("p")
    assert b.shared is not None
    await b.shared.drain()
    assert await a.admit("p", None, Owner(2), 5) is None


async def test_the_mirror_shows_circuits_decided_elsewhere(
    pair: tuple[Resilience, Resilience],
) -> None:
    a, b = pair
    await fail(a, 3)
    assert b.state("p", None)["circuit"]["state"] == CLOSED
    await b.refresh_shared(["p"])
    circuit = b.state("p", None)["circuit"]
    assert circuit["state"] == OPEN and circuit["trips"] == 1
    assert circuit["cooldown_until"] > time.time() * 1000
    assert b.circuit_changes() == [("p", OPEN, circuit["cooldown_until"])]


# -- Redis away ------------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_redis_falls_back_to_counting_per_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    res = replica(f"redis://:hunter2-redis-password@127.0.0.1:{closed_port()}/0", "t:")
    try:
        with caplog.at_level(logging.INFO, "provider_router.shared"):
            verdicts = [await res.admit("p", Limits(rpm=2), Owner(i), 5) for i in range(4)]
        assert [v is None for v in verdicts] == [True, True, False, False]
        status = res.shared_status()
        assert status["state"] == "unreachable" and status["on_failure"] == "local"
        assert "127.0.0.1" not in str(status)  # /health is open to anyone: no address
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "counting per process" in errors[0].getMessage()
        assert "hunter2" not in caplog.text and "hunter2" not in str(status)
    finally:
        await res.aclose()


async def test_closed_mode_refuses_with_503_when_redis_is_away() -> None:
    res = replica(f"redis://127.0.0.1:{closed_port()}/0", "t:", redis_on_failure="closed")
    try:
        with pytest.raises(SharedStateUnavailable) as caught:
            await res.admit("p", None, Owner(1), 5)
        assert caught.value.status_code == 503
        assert caught.value.code == "shared_state_unavailable"
        assert "127.0.0.1" not in caught.value.message  # where Redis runs is not the client's
        # Within the second Redis is left alone, still refused, without trying it.
        with pytest.raises(SharedStateUnavailable):
            res.check_client(ClientKey(id="k", name="k", rpm_limit=1))
        assert res.shared is not None and res.shared.failures == 1
    finally:
        await res.aclose()


async def test_a_hung_redis_costs_one_timeout_not_a_hung_request(silent_port: int) -> None:
    res = replica(f"redis://127.0.0.1:{silent_port}/0", "t:", redis_timeout_ms=200)
    try:
        started = time.perf_counter()
        first = await res.admit("p", None, Owner(1), 5)
        took = time.perf_counter() - started
        started = time.perf_counter()
        later = [await res.admit("p", None, Owner(i), 5) for i in range(2, 50)]
        took_later = time.perf_counter() - started
    finally:
        await res.aclose()
    assert first is None and later == [None] * 48
    assert 0.15 < took < 2  # bounded by redis.timeout_ms (200 ms), with room for a loaded box
    assert took_later < 1  # Redis is left alone for a second: no timeout per request


async def test_the_shared_state_comes_back_when_redis_answers_again(redis_url: str) -> None:
    res = replica(redis_url, f"test-{os.urandom(6).hex()}:")
    assert res.shared is not None
    try:
        res.shared.up = False  # as after an outage
        assert await res.admit("p", None, Owner(1), 5) is None
        assert res.shared_status()["state"] == "ok"
    finally:
        await res.aclose()


def test_the_breakers_are_shared_ones_only_with_a_redis_url() -> None:
    assert Resilience.from_settings(Settings()).shared is None
    res = Resilience.from_settings(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(res.breakers.get("p"), SharedBreaker)
    assert res.shared_status()["backend"] == "redis"
    assert Resilience.from_settings(Settings()).shared_status() == {"backend": "process"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:****@h:1/0"),
        ("redis://user:pw@h:1/0", "redis://user:****@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("rediss://u:p@w@h/0", "rediss://u:****@h/0"),
    ],
)
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert public_url(url) == shown


# -- settings and the app -------------------------------------------------------------------


def test_redis_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[redis]\non_failure = "closed"\ntimeout_ms = 100\nprefix = "pr1:"\n')
    env = {"PROVIDER_ROUTER_REDIS_URL": "redis://cache:6379/2"}
    loaded = load_settings(str(config), environ=env)
    assert (loaded.redis_url, loaded.redis_on_failure) == ("redis://cache:6379/2", "closed")
    assert (loaded.redis_timeout_ms, loaded.redis_prefix) == (100, "pr1:")
    assert "cache" not in repr(loaded)  # the URL may hold a password: never in a repr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('url = "http://:secret-pw@cache:6379"', "must be a redis://, rediss:// or unix:// URL"),
        ('on_failure = "open"', "must be one of local, closed, got 'open'"),
        ("timeout_ms = 0", "must be at least 1"),
        ('prefix = ""', "must not be empty"),
    ],
)
def test_a_bad_redis_setting_stops_start_up(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[redis]\n{toml}\n")
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(str(config), environ={})
    assert "secret-pw" not in str(caught.value)


async def test_health_says_where_limits_and_circuits_are_kept(
    tmp_path: Path, redis_url: str
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        assert (await client.get("/health")).json()["shared_state"] == {"backend": "process"}
    settings = make_settings(tmp_path, redis_url=redis_url, redis_prefix=f"t{os.urandom(4).hex()}:")
    async with app_client(settings) as (_, client):
        found = (await client.get("/health")).json()
    assert found["status"] == "ok"
    assert found["shared_state"]["backend"] == "redis"
    assert found["shared_state"]["state"] == "ok"


async def test_health_is_degraded_while_redis_is_away(tmp_path: Path) -> None:
    url = f"redis://:a-redis-password-123@127.0.0.1:{closed_port()}/0"
    async with app_client(make_settings(tmp_path, redis_url=url)) as (app, client):
        assert app.services is not None
        await app.services.proxy.resilience.admit("p", None, Owner(1), 5)
        found = (await client.get("/health")).json()
        await sign_in(client)
        page = await client.get("/ui/settings")
    assert found["status"] == "degraded"
    assert found["shared_state"]["state"] == "unreachable"
    assert found["shared_state"]["down_since"] > 0
    assert "a-redis-password-123" not in str(found)
    assert page.status_code == 200 and "redis://:****@127.0.0.1:" in page.text
    assert "a-redis-password-123" not in page.text
