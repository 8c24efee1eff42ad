"""`provider-router serve` at its open-files limit (issue 16, item 2), as a real process.

The process gets a small RLIMIT_NOFILE; idle client connections use up its descriptors, so the
next upstream connection fails with EMFILE. That is the proxy's own limit: the client gets 503
``gateway_overloaded`` with Retry-After, the provider's circuit is not opened, and once the idle
connections go the same provider answers again. At start the soft limit is raised as far as the
hard limit allows, and the log says so.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, mock_upstream_process, wait_until_up
from tests.test_serve import write_config

CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}


def limited(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def serve(config: Path, port: int, soft: int, hard: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port)],
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=limited(soft, hard),  # only setrlimit, before exec
    )


@pytest.fixture
def mock_upstream(tmp_path: Path) -> Iterator[str]:
    with mock_upstream_process(tmp_path) as url:
        yield f"{url}/v1"


def stop(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    output, _ = process.communicate(timeout=30)
    return output.decode()


def test_start_up_raises_the_soft_open_files_limit_and_logs_it(
    tmp_path: Path, mock_upstream: str
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 4096 if hard == resource.RLIM_INFINITY or hard >= 4096 else hard
    if target <= 256:
        pytest.skip(f"the hard open-files limit here ({hard}) leaves nothing to raise")
    port = free_port()
    process = serve(write_config(tmp_path / "c.toml", mock_upstream), port, 256, target)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
    finally:
        output = stop(process)
    assert (
        f"Open files limit (RLIMIT_NOFILE): {target} (raised from 256; hard limit {target})"
        in output
    ), output


def test_running_out_of_file_descriptors_answers_503_without_opening_the_circuit(
    tmp_path: Path, mock_upstream: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    limit = 96
    process = serve(write_config(tmp_path / "c.toml", mock_upstream), port, limit, limit)
    idle: list[socket.socket] = []
    try:
        wait_until_up(f"{url}/health", process)
        # A keep-alive connection that is already accepted (no upstream one yet to reuse).
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/health").status_code == 200
            for _ in range(limit + 20):  # more idle clients than the process has descriptors
                sock = socket.create_connection(("127.0.0.1", port))
                idle.append(sock)
            time.sleep(1.0)  # let the server accept what it can
            answers = [client.post("/v1/chat/completions", json=CHAT) for _ in range(8)]
            for sock in idle:
                sock.close()
            idle.clear()
            time.sleep(1.0)
            after = client.post("/v1/chat/completions", json=CHAT)
            provider = client.get("/v1/providers/mock", headers={"authorization": "Bearer x"})
    finally:
        for sock in idle:
            sock.close()
        output = stop(process)
    statuses = [a.status_code for a in answers]
    assert statuses.count(503) >= 6, (statuses, output[-3000:])
    for answer in answers:
        if answer.status_code == 503:
            error = answer.json()["error"]
            assert error["code"] == "gateway_overloaded", error
            assert "RLIMIT_NOFILE" in error["message"]
            assert int(answer.headers["retry-after"]) >= 1
    # Eight failures would have opened the circuit (threshold 5) had they counted.
    assert after.status_code == 200, (after.text, output[-3000:])
    assert provider.status_code in (401, 403)  # (the admin API is not open; only a sanity check)
    assert output.count("is at its limit open files (RLIMIT_NOFILE)") == 1, output[-3000:]


def test_the_collector_is_tuned_for_a_long_running_server() -> None:
    import gc

    from router.server import tune_collector

    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_freeze_count() > 0  # what was loaded is out of the full passes' way
        assert gc.get_threshold()[0] == 7000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
