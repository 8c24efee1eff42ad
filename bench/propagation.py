"""How long a config change made through one replica takes to reach another (issue 18).

Starts two real ``provider-router serve`` processes on one PostgreSQL database, with a reload
interval far longer than the bound (5 s), so what arrives sooner came by LISTEN/NOTIFY. Makes N
changes through replica A's management API (a provider's priority) and, for each, measures from
A's answer (the change is committed by then) until replica B's ``/health`` reports the new
config version, polling B every millisecond. Prints p50, p90, p99 and max.

    PROVIDER_ROUTER_TEST_POSTGRES_URL=postgresql://router:router@127.0.0.1:55432/router \\
        .venv/bin/python -m bench.propagation --changes 100

It creates a database of its own on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.helpers import ADMIN, fresh_postgres_database, service_url
from tests.replicas import replicas, wait_for


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = max(int(len(ordered) * percent / 100 + 0.999999) - 1, 0)
    return ordered[rank]


def measure(database_url: str, changes: int, workdir: Path) -> list[float]:
    delays: list[float] = []
    with (
        replicas(database_url, workdir, reload_interval_ms=5000) as (a, b),
        httpx.Client(timeout=10) as http,
    ):
        body = {"id": "p", "name": "p", "type": "openai", "config": {"baseURL": "http://x/v1"}}
        assert http.post(f"{a.url}/v1/providers", json=body, headers=ADMIN).status_code == 201
        for i in range(changes):
            answer = http.put(f"{a.url}/v1/providers/p", json={"priority": i}, headers=ADMIN)
            committed = time.perf_counter()
            assert answer.status_code == 200, answer.text
            target = a.config_version(http)  # A rebuilt before answering: the new version
            wait_for(lambda: b.config_version(http) >= target, "B follows A", step_s=0.001)  # noqa: B023
            delays.append(time.perf_counter() - committed)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    server = service_url("postgres")
    if server is None:
        raise SystemExit("No test PostgreSQL: run scripts/test-services first.")
    with fresh_postgres_database(server) as url, tempfile.TemporaryDirectory() as tmp:
        delays = measure(url, args.changes, Path(tmp))
    ms = [d * 1000 for d in delays]
    print(f"{len(ms)} changes made on replica A, seen by replica B after (ms):")
    print(
        f"  p50 {percentile(ms, 50):.1f}  p90 {percentile(ms, 90):.1f}  "
        f"p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}  mean {statistics.fmean(ms):.1f}"
    )


if __name__ == "__main__":
    main()
