"""Two real ``provider-router serve`` processes sharing one Redis (and one SQLite file).

The fake upstream runs in the test's own process on a loopback socket, so the test counts what
really reached it. Each test has a Redis key prefix of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from router.mock.options import MockOptions
from router.mock.upstream import MockUpstream
from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    TEST_SECRET_KEY,
    eventually,
    free_port,
    query,
    require,
    require_redis,
    serve_asgi,
    start,
    wait_until_up,
)

BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def write_config(path: Path, upstream: str, prefix: str, *, rpm: int | None = None,
                 on_failure: str = "local", timeout_ms: int = 3000) -> Path:  # fmt: skip
    limits = f"limits = {{ rpm = {rpm} }}" if rpm else ""
    path.write_text(
        f"""
[redis]
prefix = "{prefix}"
on_failure = "{on_failure}"
timeout_ms = {timeout_ms}

[breaker]
failure_threshold = 3
cooldown_ms = 1500

[routing]
max_attempts = 1
connect_retries = 0

[recorder]
flush_interval_ms = 50

[[providers]]
id = "mock"
name = "mock"
type = "openai"
config = {{ baseURL = "{upstream}/v1", apiKey = "sk-scale-out-upstream" }}
models = ["mock-gpt"]
{limits}
"""
    )
    return path


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path,
    redis_url: str,
    configs: list[Path],
    processes: list[subprocess.Popen[bytes]] | None = None,
    outputs: list[str] | None = None,
) -> AsyncIterator[list[str]]:
    """One ``serve`` per config, all on one database file and one Redis; yields their URLs.
    ``processes`` and ``outputs``, when given, receive the processes and (at the end) what
    each printed."""
    env = {
        "PROVIDER_ROUTER_REDIS_URL": redis_url,
        "PROVIDER_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROVIDER_ROUTER_SECRET_KEY": TEST_SECRET_KEY,
        "PROVIDER_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
    }
    processes = [] if processes is None else processes
    urls = []
    try:
        for config in configs:
            port = free_port()
            process = start("serve", "--config", str(config), "--port", str(port),
                            cwd=tmp_path, env=env)  # fmt: skip
            processes.append(process)
            url = f"http://127.0.0.1:{port}"
            # One after the other: the first one creates and migrates the database.
            await asyncio.to_thread(wait_until_up, f"{url}/health", process)
            urls.append(url)
        yield urls
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            output = process.stdout.read().decode() if process.stdout else ""
            if process.stdout:
                process.stdout.close()
            assert "sk-scale-out-upstream" not in output
            if outputs is not None:
                outputs.append(output)


@pytest.fixture
def prefix() -> str:
    return f"scale-{os.urandom(5).hex()}:"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[MockUpstream, str]]:
    fake = MockUpstream(MockOptions())
    async with serve_asgi(fake.app()) as url:
        yield fake, url
        fake.release_hangs()


def chats(upstream: MockUpstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/chat/completions"))


async def post_all(client: httpx.AsyncClient, urls: list[str]) -> list[httpx.Response]:
    return await asyncio.gather(
        *(client.post(f"{url}/v1/chat/completions", json=BODY) for url in urls)
    )


async def test_a_provider_limited_to_10_rpm_gets_10_requests_from_both_replicas(
    tmp_path: Path, prefix: str, upstream: tuple[MockUpstream, str]
) -> None:
    redis_url = require_redis()
    fake, url = upstream
    config = write_config(tmp_path / "a.toml", url, prefix, rpm=10)
    async with (
        replicas(tmp_path, redis_url, [config, config]) as (a, b),
        httpx.AsyncClient(timeout=20) as client,
    ):
        answers = await post_all(client, [a, b] * 15)

    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 20
    assert chats(fake) == 10
    refused = [r for r in answers if r.status_code == 429]
    # Both replicas refused some: neither counted alone.
    assert {str(r.url).rsplit("/v1", 1)[0] for r in refused} == {a, b}
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    assert refused[0].json()["error"]["type"] == "rate_limit_error"


async def test_a_client_key_limit_holds_across_both_replicas(
    tmp_path: Path, prefix: str, upstream: tuple[MockUpstream, str]
) -> None:
    redis_url = require_redis()
    fake, url = upstream
    config = write_config(tmp_path / "a.toml", url, prefix)
    async with (
        replicas(tmp_path, redis_url, [config, config]) as (a, b),
        httpx.AsyncClient(timeout=20) as client,
    ):
        created = await client.post(
            f"{a}/v1/keys", json={"name": "team", "rpm_limit": 4}, headers=ADMIN
        )
        assert created.status_code == 201, created.text
        key = {"authorization": f"Bearer {created.json()['key']}"}

        async def b_knows_the_key() -> bool:
            # Until it has loaded one, B takes any key; then only known ones.
            bogus = {"authorization": "Bearer pr-not-a-key"}
            if (await client.get(f"{b}/v1/models", headers=bogus)).status_code != 401:
                return False
            return (await client.get(f"{b}/v1/models", headers=key)).status_code == 200

        await eventually(b_knows_the_key, "replica B knows the key created on A")
        answers = await asyncio.gather(
            *(client.post(f"{u}/v1/chat/completions", json=BODY, headers=key) for u in [a, b] * 5)
        )

    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == 6
    assert chats(fake) == 4
    refused = [r for r in answers if r.status_code == 429]
    assert {str(r.url).rsplit("/v1", 1)[0] for r in refused} == {a, b}
    assert "Client key 'team'" in refused[0].json()["error"]["message"]


async def test_a_circuit_opened_on_a_is_honoured_by_b_with_one_probe(
    tmp_path: Path, prefix: str, upstream: tuple[MockUpstream, str]
) -> None:
    redis_url = require_redis()
    fake, url = upstream
    config = write_config(tmp_path / "a.toml", url, prefix)
    async with (
        replicas(tmp_path, redis_url, [config, config]) as (a, b),
        httpx.AsyncClient(timeout=20) as client,
    ):
        fake.options = MockOptions(fail="status:500")
        for _ in range(3):  # failure_threshold = 3, all seen by A
            answer = await client.post(f"{a}/v1/chat/completions", json=BODY)
            assert answer.status_code == 502
        assert chats(fake) == 3
        await asyncio.sleep(0.3)  # A writes the failures to Redis in the background

        refused = await post_all(client, [b] * 5)
        assert [r.status_code for r in refused] == [503] * 5
        assert refused[0].json()["error"]["code"] == "providers_cooling_down"
        assert chats(fake) == 3  # B sent nothing upstream
        health = await client.get(f"{b}/v1/health/providers", headers=ADMIN)
        assert health.json()["data"][0]["circuit"]["state"] == "open"

        # Cooldown over: half-open. The upstream is well again but slow, so that every
        # request below arrives while the one probe is still out.
        await asyncio.sleep(1.6)
        fake.options = MockOptions(latency_ms=1000)
        answers = await post_all(client, [a, b] * 6)
        statuses = [r.status_code for r in answers]
        assert statuses.count(200) == 1, statuses
        assert statuses.count(503) == 11
        assert chats(fake) == 4  # exactly one probe across the cluster

        # The probe succeeded: closed on both (the verdict goes to Redis in the background,
        # sent before the probe's answer; the pause is margin for a loaded machine).
        fake.options = MockOptions()
        await asyncio.sleep(0.3)
        again = await post_all(client, [a, b, a, b])
        assert [r.status_code for r in again] == [200] * 4


async def test_history_from_both_replicas_lands_in_one_table_after_sigterm(
    tmp_path: Path, prefix: str, upstream: tuple[MockUpstream, str]
) -> None:
    redis_url = require_redis()
    _, url = upstream
    config = write_config(tmp_path / "a.toml", url, prefix, rpm=1000)
    processes: list[subprocess.Popen[bytes]] = []
    outputs: list[str] = []
    async with (
        replicas(tmp_path, redis_url, [config, config], processes, outputs) as (a, b),
        httpx.AsyncClient(timeout=20) as client,
    ):
        answers = await post_all(client, [a, b] * 20)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(process.wait, 20) for process in processes]

    assert [r.status_code for r in answers] == [200] * 40
    assert codes == [-signal.SIGTERM] * 2
    assert sum(int(o.split("Recorded ")[1].split(" ")[0]) for o in outputs) == 40
    assert query(tmp_path / "shared.db", "SELECT count(*) FROM requests") == [(40,)]
    assert query(tmp_path / "shared.db", "SELECT count(*) FROM attempts") == [(40,)]
    assert query(tmp_path / "shared.db", "SELECT success_count FROM providers") == [(40,)]


async def test_sigkill_of_one_replica_leaves_the_other_serving(
    tmp_path: Path, prefix: str, upstream: tuple[MockUpstream, str]
) -> None:
    redis_url = require_redis()
    fake, url = upstream
    config = write_config(tmp_path / "a.toml", url, prefix, rpm=1000)
    processes: list[subprocess.Popen[bytes]] = []
    async with (
        replicas(tmp_path, redis_url, [config, config], processes) as (a, b),
        httpx.AsyncClient(timeout=20) as client,
    ):
        assert [r.status_code for r in await post_all(client, [a, b])] == [200, 200]
        processes[0].kill()
        await asyncio.to_thread(processes[0].wait, 20)
        with pytest.raises(httpx.ConnectError):
            await client.post(f"{a}/v1/chat/completions", json=BODY)
        after = await post_all(client, [b] * 10)
        assert [r.status_code for r in after] == [200] * 10
        assert (await client.get(f"{b}/health")).json()["status"] == "ok"
    assert chats(fake) == 12


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A Redis server of the test's own on ``port``, answering when this returns."""
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server (scripts/test-services)")
    assert binary is not None
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"redis-server did not answer on port {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    # SIGKILL ends a stopped process too; a SIGCONT first would let it answer what it held.
    if process.poll() is None:
        process.kill()
    process.wait()


async def timed(client: httpx.AsyncClient, url: str) -> tuple[int, float, str]:
    started = time.perf_counter()
    answer = await client.post(f"{url}/v1/chat/completions", json=BODY)
    code = answer.json().get("error", {}).get("code", "") if answer.status_code != 200 else ""
    return answer.status_code, time.perf_counter() - started, code


async def test_redis_stopped_mid_run_local_counts_alone_closed_refuses_none_hangs(
    tmp_path: Path, prefix: str, upstream: tuple[MockUpstream, str]
) -> None:
    _, url = upstream
    # A short Redis timeout (500 ms): the requests below must not wait longer than that.
    local = write_config(tmp_path / "local.toml", url, prefix, rpm=1000, timeout_ms=500)
    closed = write_config(
        tmp_path / "closed.toml", url, prefix, rpm=1000, on_failure="closed", timeout_ms=500
    )
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    redis_process = start_redis(port)
    outputs: list[str] = []
    try:
        async with (
            replicas(tmp_path, redis_url, [local, closed], None, outputs) as (a, b),
            httpx.AsyncClient(timeout=10) as client,
        ):
            assert [(await timed(client, u))[0] for u in (a, b)] == [200, 200]

            # A hung Redis (stopped, its socket still open): every call runs into
            # redis.timeout_ms (500 ms); no request waits longer than that, plus margin.
            redis_process.send_signal(signal.SIGSTOP)
            hung = [await timed(client, u) for u in (a, b, a, b)]
            assert [(s, c) for s, _, c in hung] == [
                (200, ""), (503, "shared_state_unavailable"),
            ] * 2  # fmt: skip
            assert max(t for _, t, _ in hung) < 3

            # A dead Redis: refused at once.
            stop(redis_process)
            dead = await asyncio.gather(*(timed(client, u) for u in (a, b) * 5))
            assert [(s, c) for s, _, c in dead] == [
                (200, ""), (503, "shared_state_unavailable"),
            ] * 5  # fmt: skip
            assert max(t for _, t, _ in dead) < 3

            for replica, on_failure in ((a, "local"), (b, "closed")):
                health = (await client.get(f"{replica}/health")).json()
                assert health["status"] == "degraded"
                assert health["shared_state"]["state"] == "unreachable"
                assert health["shared_state"]["on_failure"] == on_failure

            # Redis back (empty, as after a restart): both share again, B serves again.
            redis_process = start_redis(port)

            async def both_serve() -> bool:
                found = [(await timed(client, u))[0] for u in (a, b)]
                return found == [200, 200]

            await eventually(both_serve, "both replicas serve through Redis again")
            for replica in (a, b):
                health = (await client.get(f"{replica}/health")).json()
                assert health["status"] == "ok" and health["shared_state"]["state"] == "ok"
    finally:
        stop(redis_process)
    # Each replica said so once when Redis went away (not once per request), and once back.
    for output in outputs:
        assert f"shared through Redis at {redis_url}" in output
        assert output.count("is unreachable") == 1, output
        assert output.count("answers again") == 1, output
