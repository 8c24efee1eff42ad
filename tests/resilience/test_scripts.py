"""ScriptRunner against the real Redis: one pipeline per loop turn, NOSCRIPT recovered."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from router.resilience.scripts import ScriptRunner
from tests.helpers import require_redis

# Counts its calls in a key, so a call that ran twice would show.
COUNT = "return {redis.call('INCR', KEYS[1]), ARGV[1]}"
FAILS = "return redis.error_reply('no such thing: ' .. ARGV[1])"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(require_redis(), decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def key() -> str:
    return f"test-runner-{os.urandom(6).hex()}"


async def test_the_calls_of_one_turn_go_out_as_one_pipeline(redis: Redis, key: str) -> None:
    runner = ScriptRunner(redis, {"count": COUNT})
    await runner.run("count", [key], ["warm"])  # loads the script (NOSCRIPT, then retried)
    before = runner.batches

    answers = await asyncio.gather(*(runner.run("count", [key], [str(i)]) for i in range(20)))

    assert runner.batches == before + 1
    assert sorted(int(n) for n, _ in answers) == list(range(2, 22))
    assert [tag for _, tag in answers] == [str(i) for i in range(20)]
    await redis.delete(key)


async def test_a_lone_call_goes_alone_and_calls_in_later_turns_do_not_wait(
    redis: Redis, key: str
) -> None:
    runner = ScriptRunner(redis, {"count": COUNT})
    first = await runner.run("count", [key], ["a"])
    second = await runner.run("count", [key], ["b"])
    assert (first, second) == ([1, "a"], [2, "b"])
    await redis.delete(key)


async def test_a_redis_that_forgot_its_scripts_runs_each_call_once(redis: Redis, key: str) -> None:
    runner = ScriptRunner(redis, {"count": COUNT})
    await runner.run("count", [key], ["x"])
    await redis.script_flush()  # as after a Redis restart

    answers = await asyncio.gather(*(runner.run("count", [key], ["y"]) for _ in range(5)))

    assert sorted(n for n, _ in answers) == [2, 3, 4, 5, 6]
    assert await redis.get(key) == "6"
    await redis.delete(key)


async def test_one_failing_call_fails_alone(redis: Redis, key: str) -> None:
    runner = ScriptRunner(redis, {"count": COUNT, "fails": FAILS})
    await runner.run("count", [key], ["load"])
    with pytest.raises(ResponseError, match="no such thing: alone"):
        await runner.run("fails", [], ["alone"])
    results = await asyncio.gather(
        runner.run("count", [key], ["a"]),
        runner.run("fails", [], ["b"]),
        runner.run("count", [key], ["c"]),
        return_exceptions=True,
    )
    assert results[0] == [2, "a"] and results[2] == [3, "c"]
    assert isinstance(results[1], ResponseError) and "no such thing: b" in str(results[1])
    await redis.delete(key)


async def test_an_unreachable_redis_fails_every_call_of_the_batch() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    runner = ScriptRunner(client, {"count": COUNT})
    try:
        results = await asyncio.gather(
            *(runner.run("count", ["k"], ["v"]) for _ in range(3)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert [type(r) for r in results] == [RedisConnectionError] * 3, results
