"""scripts/test-services: starts PostgreSQL and Redis without systemd, and only once.

The test starts a pair of its own on free ports (the shared pair other tests use is left alone),
checks both answer at the URLs written, that a second run changes nothing, and stops them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.helpers import free_port, require

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test-services"


def postgres_installed() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, str]]:
    require(
        postgres_installed() and shutil.which("redis-server") is not None,
        "PostgreSQL and Redis (scripts/test-services)",
    )
    env = {
        **os.environ,
        "PROVIDER_ROUTER_TEST_POSTGRES_PORT": str(free_port()),
        "PROVIDER_ROUTER_TEST_REDIS_PORT": str(free_port()),
        "PROVIDER_ROUTER_TEST_SERVICES_ENV": str(tmp_path / "services.env"),
    }
    yield env
    subprocess.run([str(SCRIPT), "stop"], env=env, timeout=120, check=False)


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_it_starts_both_once_and_writes_their_urls(pair: dict[str, str], tmp_path: Path) -> None:
    first = run(pair)
    assert first.returncode == 0, first.stderr
    urls = dict(line.split("=", 1) for line in (tmp_path / "services.env").read_text().splitlines())
    pg_port = pair["PROVIDER_ROUTER_TEST_POSTGRES_PORT"]
    redis_port = pair["PROVIDER_ROUTER_TEST_REDIS_PORT"]
    assert urls == {
        "PROVIDER_ROUTER_TEST_POSTGRES_URL": f"postgresql://router:router@127.0.0.1:{pg_port}/router",
        "PROVIDER_ROUTER_TEST_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    with Redis.from_url(urls["PROVIDER_ROUTER_TEST_REDIS_URL"]) as redis:
        assert redis.ping() is True
    psql = [
        "psql", urls["PROVIDER_ROUTER_TEST_POSTGRES_URL"], "-tA", "-c",
        "SELECT current_user, has_database_privilege('router', 'CREATE')",
    ]  # fmt: skip
    answer = subprocess.run(psql, capture_output=True, text=True, timeout=30, check=True)
    assert answer.stdout.strip() == "router|t"

    again = run(pair)
    assert again.returncode == 0, again.stderr
    # Nothing restarted: Redis kept what the first one held.
    with Redis.from_url(urls["PROVIDER_ROUTER_TEST_REDIS_URL"]) as redis:
        redis.set("kept", "1")
    assert run(pair).returncode == 0
    with Redis.from_url(urls["PROVIDER_ROUTER_TEST_REDIS_URL"]) as redis:
        assert redis.get("kept") == b"1"
