"""What sharing limits and circuits through Redis costs a request, measured.

    .venv/bin/python -m bench.shared --redis redis://127.0.0.1:56379/0 [--rounds 4] [--seconds 5]
    .venv/bin/python -m bench.shared --redis redis://127.0.0.1:56379/0 --micro

Two provider-router processes (core 0, one under load at a time), identical but for
``PROVIDER_ROUTER_REDIS_URL``: ``process`` counts per process, ``redis`` in Redis (one admission
script per request). Their one provider has an rpm limit far above the load, so the limit is
checked (and counted) on every request without refusing any. nginx serves canned answers (core
1, with wrk), as in ``bench/run.sh``. Rounds alternate the order, so drift in the machine's load
hits both alike; prints req/s per run, the redis/process ratio per round, its median and range.

``--micro`` times :meth:`Resilience.admit` alone instead: µs per call per process and with Redis
(the round trip), and the per-process call against the synchronous checks it replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import canned
from bench.transport import wait_until_up, wrk
from router.resilience.policy import Resilience, provider_key
from router.resilience.ratelimit import Limits
from router.settings import Settings

VARIANTS = ("process", "redis")


def seed(nginx: str, mode: str) -> str:
    return (
        f'[redis]\nprefix = "bench-{os.urandom(4).hex()}:"\n\n'
        f'[[providers]]\nid = "bench"\nname = "bench"\ntype = "openai"\n'
        f'config = {{ baseURL = "{nginx}/{mode}/v1", apiKey = "bench-key" }}\n'
        f'models = ["bench-{mode}"]\nlimits = {{ rpm = 1000000000 }}\n'
    )


class Owner:
    def __init__(self, n: int) -> None:
        self.id = f"req_{n}"


async def micro(redis_url: str, calls: int) -> None:
    limits = Limits(rpm=1_000_000_000)
    local = Resilience.from_settings(Settings())
    owners = [Owner(i) for i in range(calls)]

    started = time.perf_counter()
    for owner in owners:
        await local.admit("p", limits, owner, 600)
    per_process = (time.perf_counter() - started) / calls * 1e6

    sync = Resilience.from_settings(Settings())
    started = time.perf_counter()
    for owner in owners:  # the checks admit() replaced in the attempt loop, as they were
        sync.breakers.get("p").allow(owner)
        sync.limiter.acquire(provider_key("p"), limits)
    before = (time.perf_counter() - started) / calls * 1e6

    shared = Resilience.from_settings(
        Settings(redis_url=redis_url, redis_prefix=f"bench-{os.urandom(4).hex()}:")
    )
    n = min(calls, 5000)
    try:
        started = time.perf_counter()
        for owner in owners[:n]:
            await shared.admit("p", limits, owner, 600)
        with_redis = (time.perf_counter() - started) / n * 1e6
        assert shared.shared is not None and shared.shared.up, "Redis did not answer"
    finally:
        assert shared.shared is not None
        keys = [k async for k in shared.shared.redis.scan_iter(f"{shared.shared.prefix}*")]
        if keys:
            await shared.shared.redis.delete(*keys)
        await shared.aclose()
    print(f"admit per process: {per_process:.2f} us/call ({calls} calls); "
          f"the sync checks it replaced: {before:.2f} us/call")  # fmt: skip
    print(f"admit with Redis (one script, one round trip): {with_redis:.1f} us/call ({n} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis", required=True, help="redis:// URL of a Redis to use")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", choices=("json", "sse"), default="json")
    parser.add_argument("--nginx-port", type=int, default=18095)
    parser.add_argument("--proxy-port", type=int, default=18093, help="and the next one")
    parser.add_argument("--micro", action="store_true", help="time admit() alone")
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    if args.micro:
        asyncio.run(micro(args.redis, args.calls))
        return
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx wrk")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    router_bin = Path(sys.executable).parent / "provider-router"
    tmp = Path(tempfile.mkdtemp(prefix="bench-shared."))
    tmp.chmod(0o755)  # nginx's worker may run as 'nobody'
    nginx_url = f"http://127.0.0.1:{args.nginx_port}"
    for name, data in {
        "json.body": canned.json_body(),
        "sse.body": canned.sse_body(),
        "nginx.conf": canned.nginx_conf(tmp, args.nginx_port).encode(),
        "proxy.toml": seed(nginx_url, args.mode).encode(),
    }.items():
        (tmp / name).write_bytes(data)
    env = {**os.environ, "PROVIDER_ROUTER_ADMIN_TOKEN": "bench-admin"}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        env.pop(name, None)
    env.pop("PROVIDER_ROUTER_REDIS_URL", None)
    ports = {"process": args.proxy_port, "redis": args.proxy_port + 1}
    processes = [
        subprocess.Popen(
            ["taskset", "-c", "1", nginx_bin, "-p", f"{tmp}/", "-c", str(tmp / "nginx.conf"),
             "-e", str(tmp / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    for variant, port in ports.items():
        extra = {"PROVIDER_ROUTER_REDIS_URL": args.redis} if variant == "redis" else {}
        processes.append(
            subprocess.Popen(
                ["taskset", "-c", "0", str(router_bin), "serve", "--config",
                 str(tmp / "proxy.toml"), "--host", "127.0.0.1", "--port", str(port),
                 "--database", f"sqlite:///{tmp / f'{variant}.db'}"],
                env={**env, **extra}, stdout=(tmp / f"{variant}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
    try:
        for port in ports.values():
            wait_until_up(f"http://127.0.0.1:{port}/health")
        body = canned.request_body(f"bench-{args.mode}", args.mode == "sse")
        targets = {v: f"http://127.0.0.1:{p}/v1/chat/completions" for v, p in ports.items()}
        print(f"{args.mode}, c={args.concurrency}, {args.seconds} s per run, {args.rounds} rounds")
        for variant in VARIANTS:  # warm-up: connections, imports, the scripts loaded in Redis
            wrk(targets[variant], body, 1, args.concurrency)
        ratios = []
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
            rates = {v: wrk(targets[v], body, args.seconds, args.concurrency) for v in order}
            ratios.append(rates["redis"] / rates["process"])
            print(f"round {round_ + 1}: process {rates['process']:.0f} req/s, "
                  f"redis {rates['redis']:.0f} req/s, redis/process {ratios[-1]:.2f}")  # fmt: skip
        print(f"redis/process median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}")  # fmt: skip
        log = (tmp / "redis.log").read_text()
        if "unreachable" in log:
            print(log[-3000:])
            raise SystemExit("Redis was unreachable during the run: the numbers are per process")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
