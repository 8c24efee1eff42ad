"""``GET /openapi.json`` describes the management API the server really has, and fuzzing it with
schemathesis finds no server error and no answer that contradicts the document."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.openapi import from_dict
from starlette.routing import Mount, Route

from router.api.openapi import document
from router.app import create_app
from tests.helpers import ADMIN, free_port, make_settings

CLIENT_PATHS = {"/health", "/openapi.json", "/v1/chat/completions", "/v1/embeddings"}
# Served by the fast path (router.app), not Starlette's routes; described for Anthropic clients.
DOOR_PATHS = {"/v1/messages", "/v1/messages/count_tokens"}
RESPONSES_DOOR = ("/v1/responses", "post")


def test_every_management_route_is_documented_with_its_methods(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    served: set[tuple[str, str]] = set()
    for route in app.starlette.routes:
        if isinstance(route, Mount) and route.path == "/ui":
            continue  # the HTML admin UI (README: Admin UI), not part of the JSON API
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
        if path in CLIENT_PATHS:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                served.add((path, method.lower()))
    described = {(path, method) for path, ops in document()["paths"].items() for method in ops}
    assert described - {(path, "post") for path in DOOR_PATHS} - {RESPONSES_DOOR} == served


async def test_the_messages_door_is_described_as_it_is_served(client: httpx.AsyncClient) -> None:
    paths = document()["paths"]
    for path in DOOR_PATHS:
        [(method, operation)] = paths[path].items()
        assert method == "post" and operation["tags"] == ["messages"]
        schemas = document()["components"]["schemas"]
        body = schemas[operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                       .rsplit("/", 1)[1]]  # fmt: skip
        # Served by the door: a body missing a required field is its 400, in Anthropic's shape.
        for field in body["required"]:
            sent = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
            del sent[field]
            response = await client.post(path, json=sent)
            assert response.status_code == 400, (path, field, response.text)
            error = response.json()
            assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
            assert field in error["error"]["message"], (path, field)
    assert paths["/v1/messages"]["post"]["responses"]["200"]["content"].keys() == {
        "application/json",
        "text/event-stream",
    }


async def test_the_document_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == document()
    assert response.json()["openapi"].startswith("3.1")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app under uvicorn in a thread (schemathesis calls it synchronously)."""
    tmp_path = tmp_path_factory.mktemp("openapi")
    port = free_port()
    config = uvicorn.Config(
        create_app(make_settings(tmp_path)), host="127.0.0.1", port=port, log_level="warning",
        lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        thread.join(0.01)
    assert server.started
    url = f"http://127.0.0.1:{port}"
    # Something to find: a provider with a link, so fuzzed ids sometimes hit a real one.
    headers = ADMIN
    body = {"id": "p", "name": "p", "type": "openai", "config": {"baseURL": "http://127.0.0.1:9"}}
    assert httpx.post(f"{url}/v1/providers", json=body, headers=headers).status_code == 201
    link = {"model_id": "m"}
    assert httpx.post(f"{url}/v1/providers/p/models", json=link, headers=headers).is_success
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


SCHEMA = from_dict(document())
# /test and the Messages and Responses doors call the upstream for real (whose failure is a 529
# by design); everything else only touches the database.
OPERATIONS = []
for found in SCHEMA.get_all_operations():
    operation = found.ok()  # type: ignore[union-attr]  # an invalid document fails here, loudly
    door = operation.path in DOOR_PATHS or (operation.path, operation.method) == RESPONSES_DOOR
    if not operation.path.endswith("/test") and not door:
        OPERATIONS.append(operation)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_fuzzing_finds_no_server_error(live_server: str, operation: object) -> None:
    headers = ADMIN

    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: object) -> None:
        case.call_and_validate(base_url=live_server, headers=headers, checks=CHECKS)  # type: ignore[attr-defined]

    run()
