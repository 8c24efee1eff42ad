"""An upstream that echoes the key it received must not leak it anywhere (issue 16, item 5).

A real misbehaving upstream (uvicorn on loopback) repeats the provider's 11-character key in the
prose of a 401, in a 500, in a 200 chat body and an embeddings body, and in an SSE error event
split across two writes. The key must not reach the client's answers, the database file or its
WAL, the log (at debug level, bodies logged), the provider's ``last_error``, the request history
or the answer of ``POST /v1/providers/{id}/test``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import create_app
from tests.helpers import ADMIN, add_provider, eventually, make_settings, serve_asgi
from tests.transport.servers import Receive, Send, lifespan, read_body

# 11 characters: shorter than the process-wide scrub's minimum, the case that leaked.
KEY = "sk-Q7x9LmP2"


def completion(content: str) -> bytes:
    return orjson.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


async def echo_upstream(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Repeats the bearer token it received in every answer, in several shapes."""
    if await lifespan(scope, receive, send):
        return
    body = orjson.loads(await read_body(receive) or b"{}")
    key = dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer ")
    model = body.get("model", "")

    async def answer(
        status: int, payload: bytes, content_type: bytes = b"application/json"
    ) -> None:
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    if scope["path"] == "/v1/models":
        prose = f"Incorrect API key provided: {key}. You can find your API key in settings."
        await answer(401, orjson.dumps({"error": {"message": prose, "type": "invalid_key"}}))
    elif scope["path"] == "/v1/embeddings":
        data = [{"object": "embedding", "index": 0, "embedding": [0.1]}]
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        payload = {"object": "list", "model": key, "data": data, "usage": usage}
        await answer(200, orjson.dumps(payload))
    elif model == "echo-401":
        await answer(401, f"Unauthorized: the key {key} is not valid here".encode(), b"text/plain")
    elif model == "echo-500":
        await answer(500, orjson.dumps({"error": {"message": f"backend rejected {key}"}}))
    elif body.get("stream"):
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        first = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
        event = b'data: {"error": {"message": "upstream saw key ' + key.encode() + b'"}}\n\n'
        cut = event.index(key.encode()) + 5  # the key arrives in two pieces
        for piece in (b"data: " + orjson.dumps(first) + b"\n\n", event[:cut], event[cut:]):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    else:
        await answer(200, completion(f"Your key is {key}, as you sent it."))


async def test_an_upstream_echoing_the_key_leaks_it_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path, log_bodies=True, log_level="debug")
    answers: list[bytes] = []
    async with (
        serve_asgi(echo_upstream) as upstream_url,
        serve_asgi(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        models = ["gpt-test", "echo-401", "echo-500", "text-embedding"]
        await add_provider(client, "echo", f"{upstream_url}/v1", models, config={"apiKey": KEY})

        async def chat(model: str, **extra: Any) -> httpx.Response:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
            response = await client.post("/v1/chat/completions", json=body)
            answers.append(response.content)
            return response

        ok = await chat("gpt-test")
        assert ok.status_code == 200
        content = ok.json()["choices"][0]["message"]["content"]
        assert content == "Your key is [redacted], as you sent it."
        unauthorized = await chat("echo-401")
        # An upstream 401 is the provider's fault (issue 17): the client gets 502 naming it.
        assert unauthorized.status_code == 502
        assert b"credential rejected" in unauthorized.content
        failed = await chat("echo-500")
        assert failed.status_code == 502
        streamed = await chat("gpt-test", stream=True)
        assert b'"upstream saw key [redacted]"' in streamed.content
        embeddings = await client.post(
            "/v1/embeddings", json={"model": "text-embedding", "input": "hi"}
        )
        assert embeddings.status_code == 200
        assert embeddings.json()["model"] == "[redacted]"
        answers.append(embeddings.content)
        probe = await client.post("/v1/providers/echo/test", headers=ADMIN)
        assert probe.json()["ok"] is False
        assert "Incorrect API key provided: [redacted]" in probe.json()["error"]
        answers.append(probe.content)

        async def recorded() -> list[dict[str, Any]]:
            found = (await client.get("/v1/requests", headers=ADMIN)).json()["data"]
            return found if len(found) == 5 else []

        rows = await eventually(recorded, "five requests were recorded")
        for row in rows:
            answers.append((await client.get(f"/v1/requests/{row['id']}", headers=ADMIN)).content)
        provider = await eventually(
            lambda: client.get("/v1/providers/echo", headers=ADMIN), "the provider answered"
        )
        assert "backend rejected [redacted]" in provider.text  # last_error, scrubbed
        answers.append(provider.content)
        answers.append((await client.get("/v1/providers", headers=ADMIN)).content)
        while_running = written_files(tmp_path)

    for answer in answers:
        assert KEY.encode() not in answer, answer
    logged = "\n".join(
        logging.Formatter().format(record) for record in caplog.records
    )  # raw records: the scrubbing formatter of `serve` is not what protects these
    assert "[redacted]" in logged  # bodies were logged, scrubbed
    assert KEY not in logged
    # The database, its WAL and anything else written beside it (backups, the key file), while
    # the server ran and after it stopped.
    assert "router.db-wal" in while_running
    assert "router.db" in written_files(tmp_path)
    for name, data in [*while_running.items(), *written_files(tmp_path).items()]:
        assert KEY.encode() not in data, name


def written_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by name, with its bytes."""
    return {path.name: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
