"""Real ``provider-router serve`` replicas on one PostgreSQL database (a plain helper, no
fixtures): what the scale-out tests and ``bench/propagation.py`` start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers import ADMIN_TOKEN, TEST_SECRET_KEY, free_port, wait_until_up


@dataclass
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def config_version(self, http: httpx.Client | None = None) -> int:
        """The config version this replica's routing snapshot was built from (``http``: a
        client kept open, for polling without a new connection each time)."""
        get = http.get if http is not None else httpx.get
        version: int = get(f"{self.url}/health", timeout=5).json()["config_version"]
        return version

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` and wait for the exit; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def write_config(path: Path, *, reload_interval_ms: int, flush_interval_ms: int) -> Path:
    path.write_text(
        f"[routing]\nreload_interval_ms = {reload_interval_ms}\n"
        f"[recorder]\nflush_interval_ms = {flush_interval_ms}\n"
    )
    return path


def start_replica(
    name: str, database_url: str, workdir: Path, config: Path, *extra_env: tuple[str, str]
) -> Replica:
    """Start one replica (not waiting for it); its output goes to ``workdir/<name>.log``."""
    port = free_port()
    log = workdir / f"{name}.log"
    env = {
        **os.environ,
        "PROVIDER_ROUTER_DATABASE_URL": database_url,
        "PROVIDER_ROUTER_SECRET_KEY": TEST_SECRET_KEY,
        "PROVIDER_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
        **dict(extra_env),
    }
    env.pop("PROVIDER_ROUTER_CONFIG", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(name, f"http://127.0.0.1:{port}", process, log)


@contextlib.contextmanager
def replicas(
    database_url: str,
    workdir: Path,
    count: int = 2,
    *,
    reload_interval_ms: int = 5000,
    flush_interval_ms: int = 50,
    env: tuple[tuple[str, str], ...] = (),
) -> Iterator[list[Replica]]:
    """``count`` replicas started together on one database (they race to migrate it), each up
    and answering; every one still running is killed on the way out.

    The reload interval is long on purpose: a change that arrives sooner came by NOTIFY.
    """
    config = write_config(
        workdir / "replica.toml",
        reload_interval_ms=reload_interval_ms,
        flush_interval_ms=flush_interval_ms,
    )
    started = [
        start_replica(chr(ord("a") + i), database_url, workdir, config, *env) for i in range(count)
    ]
    try:
        for replica in started:
            try:
                wait_until_up(f"{replica.url}/health", replica.process)
            except AssertionError as exc:
                raise AssertionError(f"replica {replica.name}: {exc}\n{replica.output()}") from None
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait()


def wait_for(check: object, what: str, timeout_s: float = 10.0, step_s: float = 0.002) -> float:
    """Call ``check()`` until it is truthy; return the seconds it took (fails after timeout)."""
    assert callable(check)
    begin = time.perf_counter()
    while not check():
        if time.perf_counter() - begin > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(step_s)
    return time.perf_counter() - begin
