"""Logs: JSON lines with the request id and the event's fields, an access line per request,
credentials scrubbed in every format, and a real `serve` process writing them."""

from __future__ import annotations

import io
import logging
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router import logs
from router.gateway.access import AccessRecord
from router.mock.upstream import MockOptions, MockUpstream
from router.settings import SettingsError, load_settings
from tests.helpers import (
    ADMIN,
    add_provider,
    app_client,
    free_port,
    make_settings,
    mock_upstream_process,
    serve_asgi,
    start,
    wait_until_up,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def emit(formatter: logging.Formatter, message: str, *args: Any, **kwargs: Any) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("provider_router.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args, **kwargs)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_a_json_line_has_time_level_logger_message_request_id_and_event_fields() -> None:
    token = logs.request_id_var.set("req_0001")
    try:
        text = emit(logs.JsonFormatter(), "served %s", "it", extra={"event": "x", "n": 3})
    finally:
        logs.request_id_var.reset(token)
    assert text.endswith("\n") and text.count("\n") == 1
    line = orjson.loads(text)
    assert line["level"] == "WARNING"
    assert line["logger"] == "provider_router.test_logs"
    assert line["message"] == "served it"
    assert line["request_id"] == "req_0001"
    assert (line["event"], line["n"]) == ("x", 3)
    assert line["time"].endswith("Z") and line["time"][10] == "T"
    assert not {"args", "msg", "levelno", "pathname"} & set(line)


def test_outside_a_request_the_request_id_is_null_and_a_traceback_is_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        text = emit(logs.JsonFormatter(), "failed", exc_info=True)
    line = orjson.loads(text)
    assert line["request_id"] is None
    assert "ValueError: boom" in line["exception"]
    assert text.count("\n") == 1  # the traceback's line breaks are escaped inside the object


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_are_scrubbed_in_both_formats(log_format: str) -> None:
    formatter = logs.formatter(log_format)
    text = emit(
        formatter,
        "upstream said %s",
        "Authorization: Bearer sk-live-0123456789abcdef",
        extra={"header": "x-api-key: sk-ant-0123456789abcdef"},
    )
    assert "sk-live-0123456789abcdef" not in text
    assert "sk-ant-0123456789abcdef" not in text
    assert "[redacted]" in text


def test_logging_format_is_text_or_json(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[logging]\nformat = "xml"\n')
    with pytest.raises(SettingsError, match=r"'logging.format'.*text, json.*'xml'"):
        load_settings(str(config), environ={})
    config.write_text('[logging]\nformat = "json"\naccess_log = false\n')
    loaded = load_settings(str(config), environ={})
    assert (loaded.log_format, loaded.access_log) == ("json", False)


async def test_each_proxied_request_logs_one_access_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_router.access")
    fake = MockUpstream(MockOptions())
    async with serve_asgi(fake.app()) as url, app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "p", f"{url}/v1", ["m"])
        caplog.clear()
        ok = await client.post("/v1/chat/completions", json=CHAT)
        missing = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        await client.get("/v1/providers", headers=ADMIN)  # management: no access line
    lines = [r for r in caplog.records if r.name == "provider_router.access"]
    assert len(lines) == 2
    first, second = (orjson.loads(logs.JsonFormatter().format(r)) for r in lines)
    assert first["event"] == "access"
    assert first["request_id"] == ok.headers["x-request-id"]
    assert (first["endpoint"], first["model"], first["provider"]) == ("chat.completions", "m", "p")
    assert (first["status"], first["outcome"], first["attempts"]) == (200, "ok", 1)
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert first["latency_ms"] >= 0
    assert second["request_id"] == missing.headers["x-request-id"]
    assert (second["status"], second["outcome"], second["provider"]) == (404, "error", None)
    assert second["attempts"] == 0
    message = lines[0].getMessage()
    assert message.startswith("access chat.completions model=m provider=p status=200 outcome=ok")
    assert f"request_id={ok.headers['x-request-id']}" in message


async def test_the_access_log_can_be_turned_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_router.access")
    async with app_client(make_settings(tmp_path, access_log=False)) as (_, client):
        await client.post("/v1/chat/completions", json=CHAT)
    assert not [r for r in caplog.records if r.name == "provider_router.access"]


async def test_a_model_name_cannot_forge_an_access_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_router.access")
    async with app_client(make_settings(tmp_path)) as (_, client):
        await client.post("/v1/chat/completions", json={**CHAT, "model": "x\nFAKE line"})
    (line,) = [r for r in caplog.records if r.name == "provider_router.access"]
    assert "\n" not in line.getMessage()


async def test_lines_logged_during_a_request_carry_its_id(tmp_path: Path) -> None:
    # As in production, the line is formatted when it is logged, inside the request.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    bodies = logging.getLogger("provider_router.bodies")
    bodies.addHandler(handler)
    bodies.setLevel(logging.INFO)
    try:
        async with app_client(make_settings(tmp_path, log_bodies=True)) as (_, client):
            response = await client.post("/v1/chat/completions", json=CHAT)
    finally:
        bodies.removeHandler(handler)
        bodies.setLevel(logging.NOTSET)
    (line,) = [orjson.loads(text) for text in stream.getvalue().splitlines()]
    assert line["message"].startswith("Request req_")
    assert line["request_id"] == response.headers["x-request-id"]


def test_serve_writes_json_lines_with_no_secret(tmp_path: Path) -> None:
    with mock_upstream_process(tmp_path) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(
            '[logging]\nformat = "json"\n'
            "[[providers]]\n"
            'id = "mock"\nname = "mock"\ntype = "openai"\nmodels = ["mock-gpt"]\n'
            f'config = {{ baseURL = "{upstream}/v1", apiKey = "sk-mock-upstream-key-123" }}\n'
        )
        port = free_port()
        server = start(
            "serve", "--config", str(config), "--port", str(port),
            "--database", f"sqlite:///{tmp_path / 'router.db'}", cwd=tmp_path,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}/health", server)
            body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
            server.send_signal(signal.SIGTERM)
            server.wait(20)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        output = server.stdout.read().decode() if server.stdout else ""
        if server.stdout:
            server.stdout.close()
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message", "request_id"} <= set(x) for x in lines)
    access = [x for x in lines if x.get("event") == "access"]
    assert len(access) == 1
    assert access[0]["request_id"] == response.headers["x-request-id"]
    assert (access[0]["model"], access[0]["provider"], access[0]["status"]) == (
        "mock-gpt",
        "mock",
        200,
    )
    assert any(x["logger"].startswith("uvicorn") for x in lines)  # uvicorn's lines too
    assert "sk-mock-upstream-key-123" not in output


async def test_sse_answers_ask_proxies_not_to_buffer(tmp_path: Path) -> None:
    fake = MockUpstream(MockOptions())
    async with serve_asgi(fake.app()) as url, app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "p", f"{url}/v1", ["m"])
        chat = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        messages = await client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 16, "stream": True, **CHAT},
        )
        responses = await client.post(
            "/v1/responses", json={"model": "m", "input": "hello", "stream": True}
        )
    for response in (chat, messages, responses):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"


def test_an_access_record_works_with_any_standard_format() -> None:
    fmt = (
        "%(asctime)s %(created)f %(msecs)d %(relativeCreated)d %(levelname)s %(levelno)d"
        " %(name)s %(pathname)s %(filename)s %(module)s %(funcName)s %(lineno)d %(process)s"
        " %(processName)s %(thread)s %(threadName)s %(message)s"
    )
    record = AccessRecord("access chat.completions model=m%s", {"event": "access"})
    line = logging.Formatter(fmt).format(record)
    assert line.endswith(" access chat.completions model=m%s")  # no %-args applied
    assert " INFO 20 provider_router.access " in line
    assert " access.py access log_access 0 " in line
    assert abs(record.created - time.time()) < 60
    assert orjson.loads(logs.JsonFormatter().format(record))["event"] == "access"
