"""What httpx's own transport costs a provider that runs on it (proxy or ``http2``), measured.

    .venv/bin/python -m bench.transport [--rounds 6] [--seconds 5] [--concurrency 16]

One provider-router process (core 0) and one nginx serving canned answers (core 1, with wrk)
on loopback, as in ``bench/run.sh``. The router has two providers per mode, identical but for
their transport: ``own`` (``proxy: ""``, the default HTTP/1.1 transport) and ``kept``
(``http2: true`` on an http:// upstream, which runs on httpx's ``AsyncHTTPTransport`` and, as
http:// has no ALPN, still speaks HTTP/1.1: the transport's cost without a proxy hop). Each round
runs wrk against both, in alternating order (own first in even rounds, kept first in odd ones),
so drift in the machine's load hits both alike. Prints req/s per run and the kept/own ratio
per round, with its median and range.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import canned

HERE = Path(__file__).resolve().parent
VARIANTS = {"own": 'proxy = ""', "kept": "http2 = true"}
MODES = {"json": False, "sse": True}


def seed(nginx: str) -> str:
    """The router's seed config: one provider and model per (mode, variant)."""
    tables = []
    for mode in MODES:
        for variant, setting in VARIANTS.items():
            name = f"{mode}-{variant}"
            tables.append(
                f'[[providers]]\nid = "{name}"\nname = "{name}"\ntype = "openai"\n'
                f'config = {{ baseURL = "{nginx}/{mode}/v1", apiKey = "bench-key", {setting} }}\n'
                f'models = ["bench-{name}"]\n'
            )
    return "\n".join(tables)


def wait_until_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def wrk(url: str, body: bytes, seconds: int, concurrency: int) -> float:
    """Requests per second of one wrk run; exits when wrk saw any error."""
    env = {**os.environ, "BENCH_BODY": body.decode()}
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s",
         "--timeout", "10s", "-s", str(HERE / "post.lua"), url],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("BENCH_RESULT "))
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    errors = sum(v for k, v in result.items() if k.startswith("err_"))
    if errors:
        raise SystemExit(f"wrk saw {errors} errors:\n{out}")
    return float(result["requests"]) / (float(result["duration_us"]) / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--nginx-port", type=int, default=18091)
    parser.add_argument("--proxy-port", type=int, default=18090)
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install -y nginx wrk")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    router_bin = Path(sys.executable).parent / "provider-router"
    tmp = Path(tempfile.mkdtemp(prefix="bench-transport."))
    tmp.chmod(0o755)  # nginx's worker may run as 'nobody'
    nginx_url = f"http://127.0.0.1:{args.nginx_port}"
    for name, data in {
        "json.body": canned.json_body(),
        "sse.body": canned.sse_body(),
        "nginx.conf": canned.nginx_conf(tmp, args.nginx_port).encode(),
        "proxy.toml": seed(nginx_url).encode(),
    }.items():
        (tmp / name).write_bytes(data)
    env = {**os.environ, "PROVIDER_ROUTER_ADMIN_TOKEN": "bench-admin"}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        env.pop(name, None)
    processes = [
        subprocess.Popen(
            ["taskset", "-c", "1", nginx_bin, "-p", f"{tmp}/", "-c", str(tmp / "nginx.conf"),
             "-e", str(tmp / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            ["taskset", "-c", "0", str(router_bin), "serve", "--config", str(tmp / "proxy.toml"),
             "--host", "127.0.0.1", "--port", str(args.proxy_port),
             "--database", f"sqlite:///{tmp / 'bench.db'}"],
            env=env, stdout=(tmp / "proxy.log").open("wb"), stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{args.proxy_port}/health")
        target = f"http://127.0.0.1:{args.proxy_port}/v1/chat/completions"
        print(f"c={args.concurrency}, {args.seconds} s per run, {args.rounds} rounds")
        for mode, stream in MODES.items():
            bodies = {v: canned.request_body(f"bench-{mode}-{v}", stream) for v in VARIANTS}
            for variant in VARIANTS:  # warm-up: first connections, imports, caches
                wrk(target, bodies[variant], 1, args.concurrency)
            ratios = []
            for round_ in range(args.rounds):
                order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                rates = {v: wrk(target, bodies[v], args.seconds, args.concurrency) for v in order}
                ratios.append(rates["kept"] / rates["own"])
                print(f"{mode} round {round_ + 1}: own {rates['own']:.0f} req/s, "
                      f"kept {rates['kept']:.0f} req/s, kept/own {ratios[-1]:.2f}")  # fmt: skip
            print(f"{mode}: kept/own median {statistics.median(ratios):.2f}, "
                  f"range {min(ratios):.2f}-{max(ratios):.2f}")  # fmt: skip
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
