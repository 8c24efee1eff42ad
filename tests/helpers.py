"""What tests share: settings, the app in process, real servers on loopback, management calls.

Fixtures live in conftest.py; everything here is a plain function or constant to import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from router.app import ProviderRouterApp, create_app
from router.settings import Settings

ADMIN_TOKEN = "test-admin-token-0123456789"
TEST_SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LTAxMjM0NTY3ODlhYmNkZWY="
# The admin token as a client sends it.
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'router.db'}",
        "admin_token": ADMIN_TOKEN,
        "recorder_flush_interval_ms": 1,
        "reload_interval_ms": 100,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[ProviderRouterApp]:
    """The app with its lifespan entered, as uvicorn would run it."""
    app = create_app(settings)
    async with app.starlette.router.lifespan_context(app.starlette):
        yield app


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings,
) -> AsyncIterator[tuple[ProviderRouterApp, httpx.AsyncClient]]:
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            yield app, client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn server on loopback; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


ProviderFactory = Callable[..., Any]


async def add_provider(
    client: httpx.AsyncClient,
    provider_id: str,
    base_url: str,
    models: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Create an ``openai`` provider through the management API and link ``models`` to it."""
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    config = {"baseURL": base_url, "apiKey": f"sk-upstream-{provider_id}"}
    config.update(fields.pop("config", {}))
    body = {"id": provider_id, "name": provider_id, "type": "openai", "config": config, **fields}
    response = await client.post("/v1/providers", json=body, headers=headers)
    assert response.status_code == 201, response.text
    for model in models or []:
        link = {"model_id": model}
        linked = await client.post(
            f"/v1/providers/{provider_id}/models", json=link, headers=headers
        )
        assert linked.status_code == 201, linked.text
    created: dict[str, Any] = response.json()
    return created


async def last_request(client: httpx.AsyncClient, app: ProviderRouterApp) -> dict[str, Any]:
    """The newest history row, with its attempts. A server records a request just after its
    last byte went out, so this waits for the row rather than read too early."""
    assert app.services is not None
    rows: list[dict[str, Any]] = []
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    for _ in range(200):
        await app.services.recorder.flush()
        rows = (await client.get("/v1/requests", headers=admin)).json()["data"]
        if rows:
            break
        await asyncio.sleep(0.01)
    assert rows, "no request was recorded"
    detail = await client.get(f"/v1/requests/{rows[0]['id']}", headers=admin)
    found: dict[str, Any] = detail.json()
    return found


def require(available: bool, what: str) -> None:
    """Skip a test whose real component is missing, except under CI, where that is a failure.

    ``.ci/run`` installs every component the tests need, so in CI a missing one means the run is
    broken, not that the test may be left out.
    """
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing under CI=true; .ci/run should have installed it.")
    pytest.skip(f"{what} is not installed here (.ci/run installs it).")


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


@contextlib.contextmanager
def mock_upstream_process(cwd: Path, *options: str) -> Iterator[str]:
    """A real ``provider-router mock-upstream`` process; yields its root URL."""
    port = free_port()
    process = start("mock-upstream", "--port", str(port), *options, cwd=cwd)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()
