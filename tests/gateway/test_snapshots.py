"""Hot reload across processes: two real `serve` processes and the CLI share one database file."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.cli.main import main
from tests.helpers import ADMIN, ADMIN_TOKEN, eventually, free_port, start, wait_until_up


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)
    if process.stdout:
        process.stdout.close()


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Two proxies on one database file; yields their URLs and the database URL."""
    config = tmp_path / "router.toml"
    config.write_text("[routing]\nreload_interval_ms = 100\n")
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"PROVIDER_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN, "PROVIDER_ROUTER_DATABASE_URL": database}
    processes, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            args = ("serve", "--config", str(config), "--port", str(port))
            process = start(*args, cwd=tmp_path, env=env)
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
            wait_until_up(f"{urls[-1]}/health", process)
        yield urls[0], urls[1], database
    finally:
        for process in processes:
            stop(process)


async def model_ids(client: httpx.AsyncClient, url: str) -> list[str]:
    response = await client.get(f"{url}/v1/models")
    return [m["id"] for m in response.json()["data"]]


async def test_a_write_on_one_server_reaches_the_other(two_servers: tuple[str, str, str]) -> None:
    first, second, _ = two_servers
    async with httpx.AsyncClient(timeout=5) as client:
        body = {"id": "up", "name": "up", "type": "openai",
                "config": {"baseURL": "http://127.0.0.1:9/v1"}}  # fmt: skip
        created = await client.post(f"{first}/v1/providers", json=body, headers=ADMIN)
        assert created.status_code == 201
        linked = await client.post(
            f"{first}/v1/providers/up/models", json={"model_id": "m1"}, headers=ADMIN
        )
        assert linked.status_code == 201
        # The writing server has it at once; the other one after its next poll.
        assert await model_ids(client, first) == ["m1"]

        async def second_has_it() -> bool:
            return await model_ids(client, second) == ["m1"]

        await eventually(second_has_it, "the second server sees m1")

        disabled = await client.post(f"{second}/v1/providers/up/disable", headers=ADMIN)
        assert disabled.status_code == 200
        chat = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}

        async def first_refuses() -> bool:
            response = await client.post(f"{first}/v1/chat/completions", json=chat)
            return response.status_code == 503

        await eventually(first_refuses, "the first server stops routing to a disabled provider")


async def test_a_cli_write_reaches_both_servers(two_servers: tuple[str, str, str]) -> None:
    first, second, database = two_servers
    assert await asyncio.to_thread(main, ["model", "add", "from-cli", "--database", database]) == 0
    async with httpx.AsyncClient(timeout=5) as client:
        for url in (first, second):

            async def has_it(url: str = url) -> bool:
                health = (await client.get(f"{url}/health")).json()
                return bool(health["config_version"] >= 1) and "from-cli" in await model_ids(
                    client, url
                )

            await eventually(has_it, f"{url} sees the model the CLI added")
