"""A provider's extra ``headers`` cannot break the framing of what goes upstream (issue 16.6).

Refused at every way in (API, CLI, config seeding) with a 400 naming the header; a bad row
already in a database makes that one provider unusable, never the snapshot.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.cli.main import main
from router.mock.upstream import MockUpstream
from router.settings import Settings
from router.store import configs
from tests.helpers import ADMIN, add_provider, app_client, make_settings, query, serve_asgi

BAD_HEADERS = [
    ({"Content-Length": "5"}, "Content-Length"),
    ({"transfer-encoding": "chunked"}, "transfer-encoding"),
    ({"Host": "evil.example"}, "Host"),
    ({"Connection": "close"}, "Connection"),
    ({"Keep-Alive": "timeout=5"}, "Keep-Alive"),
    ({"Upgrade": "h2c"}, "Upgrade"),
    ({"TE": "trailers"}, "TE"),
    ({"Trailer": "x"}, "Trailer"),
    ({"Proxy-Authorization": "Basic eA=="}, "Proxy-Authorization"),
    ({"X-Team": "a\r\nX-Injected: 1"}, "X-Team"),
    ({"X-Team": "a\nb"}, "X-Team"),
    ({"X-Tëam": "a"}, "X-Tëam"),
    ({"X Team": "a"}, "X Team"),
    ({"X-Team:": "a"}, "X-Team:"),
]


def assert_names(response: httpx.Response, name: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "config"
    assert repr(name) in error["message"]
    # The value may be a credential: it is never quoted back.
    assert "evil.example" not in error["message"] and "eA==" not in error["message"]


@pytest.mark.parametrize(("headers", "name"), BAD_HEADERS)
async def test_the_api_refuses_a_bad_header_naming_it_and_stores_nothing(
    settings: Settings, headers: dict[str, str], name: str
) -> None:
    async with app_client(settings) as (_, client):
        body = {"id": "p", "name": "p", "type": "openai",
                "config": {"baseURL": "http://127.0.0.1:9/v1", "headers": headers}}  # fmt: skip
        assert_names(await client.post("/v1/providers", json=body, headers=ADMIN), name)
        await add_provider(client, "q", "http://127.0.0.1:9/v1")
        patch = {"value": headers}
        put = await client.patch("/v1/providers/q/config/headers", json=patch, headers=ADMIN)
        assert_names(put, name)
        whole = {"config": {"baseURL": "http://127.0.0.1:9/v1", "headers": headers}}
        assert_names(await client.put("/v1/providers/q/config", json=whole, headers=ADMIN), name)
    assert query(settings, "SELECT id FROM providers") == [("q",)]
    assert query(settings, "SELECT key FROM provider_configs WHERE key = 'headers'")\
        == []  # fmt: skip


def test_the_cli_refuses_a_bad_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    headers = 'headers={"Transfer-Encoding": "chunked"}'
    code = main(["provider", "add", "--id", "p", "--name", "p", "--type", "openai",
                 "--set", "baseURL=http://127.0.0.1:9/v1", "--set", headers,
                 "--database", database])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "'Transfer-Encoding'" in err
    assert query(tmp_path / "cli.db", "SELECT count(*) FROM providers") == [(0,)]


def test_a_bad_header_in_the_config_file_stops_start_up_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[providers]]\nid = "p"\nname = "p"\ntype = "openai"\n'
        'config = { baseURL = "http://127.0.0.1:9/v1", headers = { Host = "x.example" } }\n'
        'models = ["m"]\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(config),
         "--database", f"sqlite:///{tmp_path / 'router.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "'Host'" in result.stderr
    assert "Traceback" not in result.stderr


async def write_raw_headers(settings: Settings, headers: dict[str, Any]) -> None:
    """Store ``headers`` for provider "bad" past the checks, as an older version (or a hand
    edit) could have."""
    async with app_client(settings) as (app, client):
        await add_provider(client, "bad", "http://127.0.0.1:9/v1", ["m"], priority=10)
        assert app.services is not None
        db = app.services.db

        async with db.transaction() as conn:
            await configs.write_config(conn, "bad", "openai", {"headers": headers}, db)


@pytest.mark.parametrize(
    "headers",
    [{"X-Tëam": "a"}, {"X-Team": "a\r\nX-Injected: 1"}, {"Content-Length": "1"},
     {"Host": "evil.example"}],
)  # fmt: skip
async def test_a_bad_row_already_stored_disables_that_provider_not_the_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    upstream = MockUpstream()
    async with serve_asgi(upstream.app()) as fake:
        settings = make_settings(tmp_path)
        await write_raw_headers(settings, headers)
        caplog.set_level(logging.ERROR, "provider_router.snapshots")
        async with app_client(settings) as (_, client):
            await add_provider(client, "good", f"{fake}/v1", ["m"], priority=1)
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            answer = await client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-provider-router-provider"] == "good"
    assert any("'bad' cannot be used" in r.getMessage() for r in caplog.records)
    # Nothing with a broken frame ever reached an upstream.
    assert len(upstream.requests) == 1
