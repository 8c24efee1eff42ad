"""The OpenAI Responses door: ``POST /v1/responses`` (Codex CLI, the OpenAI SDK's
``client.responses``, openai-agents).

To a provider that serves the Responses API itself (an ``openai`` provider with
``responsesAPI: true``) the client's body passes through with only the model replaced (and a
conversation stored here expanded in place of ``previous_response_id``), and the upstream's bytes
come back. To every other provider the request is translated into the chat interface
(:mod:`router.doors.responses_request`) and the answer back (:mod:`router.doors.responses_answer`).

State: with ``store`` (true unless the client says false) the finished response and its input
items are kept (:class:`~router.doors.responses_keeper.ResponseKeeper`, owned by the client key
that made it); ``previous_response_id`` prepends a stored conversation's items.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from providers.base import ChatStream, Reply
from router.doors.base import FrontDoor, RouterRequest
from router.doors.chat import parse_object
from router.doors.responses_answer import (
    ResponsesStream,
    event,
    response_from_completion,
    response_id,
    skeleton,
    usage_object,
)
from router.doors.responses_keeper import ResponseKeeper
from router.doors.responses_request import (
    Untranslatable,
    chat_body,
    check_request,
    input_items,
    resolve_references,
)
from router.errors import (
    InvalidRequest,
    RouterError,
    StreamInterrupted,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from router.store.responses import EVERY_OWNER, Owner, StoredResponse

DIALECT = "openai.responses"
STORED_STATUSES = frozenset({"completed", "incomplete"})
STORED_EVENTS = frozenset({"response.completed", "response.incomplete"})
_SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')
_TERMINAL = (b'"response.completed"', b'"response.incomplete"')


def is_responses_path(path: str) -> bool:
    """Whether ``path`` is the Responses endpoint (with or without ``/v1``)."""
    return path.removeprefix("/v1") == "/responses"


@dataclass(slots=True)
class _State:
    body: dict[str, Any]  # the client's request
    items: list[dict[str, Any]]  # its own input items, with ids
    response_id: str
    store: bool
    owner: str | None = None
    request_id: str | None = None
    renderer: ResponsesStream | None = None
    last_sequence: int = -1  # a native stream's last sequence_number


class ResponsesDoor(FrontDoor):
    """``POST /v1/responses``."""

    endpoint: ClassVar[str] = "responses"
    dialect: ClassVar[str | None] = DIALECT
    stateful: ClassVar[bool] = True

    def __init__(self, keeper: ResponseKeeper | None = None) -> None:
        self.keeper = keeper

    def parse(self, raw: bytes, headers: list[tuple[bytes, bytes]]) -> RouterRequest:
        body = parse_object(raw)
        check_request(body)
        if "input" not in body:
            raise InvalidRequest("Field 'input' is required.", param="input")
        items = input_items(body["input"])
        state = _State(body, items, response_id(), body.get("store", True) is not False)
        request = RouterRequest(
            body["model"], {}, stream=body.get("stream") is True, native=body, state=state
        )
        # With a previous response the chat body is built in prepare(), over the whole
        # conversation.
        if body.get("previous_response_id") is None:
            translate(request, items)
        return request

    async def prepare(self, request: RouterRequest, owner: str | None, request_id: str) -> None:
        """Load the stored conversation ``previous_response_id`` names, and build the chat body
        over it; note who owns the answer."""
        state: _State = request.state
        state.owner, state.request_id = owner, request_id
        body = state.body
        previous = body.get("previous_response_id")
        if previous is None:
            return
        found = None
        if self.keeper is not None:
            viewer: Owner = EVERY_OWNER if owner is None else owner
            found = await self.keeper.conversation(previous, viewer)
        if not found:
            raise InvalidRequest(
                f"Previous response with id {previous!r} not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        earlier = [item for stored in found for item in conversation_items(stored)]
        items = resolve_references(state.items, earlier)
        translate(request, earlier + items)
        native = {k: v for k, v in body.items() if k != "previous_response_id"}
        native["input"] = earlier + items
        request.native = native

    def _keep(self, request: RouterRequest, response: dict[str, Any]) -> None:
        state: _State = request.state
        if not state.store or self.keeper is None or response.get("status") not in STORED_STATUSES:
            return
        stored = StoredResponse(
            id=str(response["id"]),
            created_at=int(time.time() * 1000),
            client_key_id=state.owner,
            request_id=state.request_id,
            model=str(response.get("model") or request.model),
            status=str(response["status"]),
            previous_response_id=state.body.get("previous_response_id"),
            input_items=state.items,
            response=response,
        )
        self.keeper.keep(stored)

    def reply(self, reply: Reply, request: RouterRequest) -> Reply:
        data = _json_object(reply.body)
        state: _State = request.state
        response = response_from_completion(data, skeleton(state.response_id, state.body))
        self._keep(request, response)
        return Reply(orjson.dumps(response), reply.usage, reply.status_code)

    def stream(self, stream: ChatStream, request: RouterRequest) -> ChatStream:
        state: _State = request.state
        response = skeleton(state.response_id, state.body)
        state.renderer = ResponsesStream(stream, response, lambda r: self._keep(request, r))
        return state.renderer.chat_stream()

    def native_answer(
        self, answer: Reply | ChatStream, request: RouterRequest
    ) -> Reply | ChatStream:
        if isinstance(answer, Reply):
            try:
                data = orjson.loads(answer.body)
            except orjson.JSONDecodeError:
                return answer
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                self._keep(request, data)
            return answer
        watched = ChatStream()
        watched.events = self._watch(answer, request, watched)
        return watched

    async def _watch(
        self, inner: ChatStream, request: RouterRequest, outer: ChatStream
    ) -> AsyncIterator[bytes]:
        """A native stream's bytes as they come, watched for its last sequence number (so a
        failure we add continues the count) and its final response (to store it)."""
        state: _State = request.state
        try:
            async for block in inner:
                outer.usage = inner.usage
                numbers = _SEQUENCE.findall(block)
                if numbers:
                    state.last_sequence = int(numbers[-1])
                if state.store and any(kind in block for kind in _TERMINAL):
                    for data in _data_lines(block):
                        response = data.get("response")
                        kind = data.get("type")
                        if kind in STORED_EVENTS and isinstance(response, dict):
                            self._keep(request, response)
                yield block
            outer.usage = inner.usage
        finally:
            outer.usage = inner.usage
            await inner.aclose()

    def stream_error(self, exc: RouterError, request: RouterRequest | None = None) -> bytes:
        upstream = exc.upstream if isinstance(exc, StreamInterrupted) else None
        if _status(upstream) == 429:
            code = "rate_limit_exceeded"
        elif (
            exc.code and exc.code != exc.default_code
        ):  # a named cause (upstream_response_too_large)
            code = exc.code
        else:
            code = "server_error"
        state: _State | None = request.state if request is not None else None
        if state is not None and state.renderer is not None:
            return state.renderer.failed(exc.message, code)
        response: dict[str, Any] = (
            skeleton(state.response_id, state.body) if state else {"id": response_id()}
        )
        response.update(status="failed", error={"code": code, "message": exc.message})
        response["usage"] = usage_object(None)
        sequence = state.last_sequence + 1 if state is not None else 0
        return event({"type": "response.failed", "response": response, "sequence_number": sequence})


def translate(request: RouterRequest, items: list[dict[str, Any]]) -> None:
    """Build the request's chat body over ``items``; what only a Responses provider could take
    is noted (``untranslatable``) rather than refused here, before routing knows the providers."""
    state: _State = request.state
    try:
        request.body = chat_body(state.body, items)
    except Untranslatable as exc:
        request.body = {"model": request.model, "messages": []}
        request.untranslatable = exc


def conversation_items(stored: StoredResponse) -> list[dict[str, Any]]:
    """A stored response's turn as input items: what it was given, then what it answered."""
    output = stored.response.get("output")
    return [*stored.input_items, *(output if isinstance(output, list) else [])]


def _status(failure: Any) -> int | None:
    return failure.status_code if isinstance(failure, UpstreamStatusError) else None


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError("The upstream's answer is not JSON.") from exc
    if not isinstance(data, dict):
        raise UpstreamProtocolError("The upstream's answer is not a JSON object.")
    return data


def _data_lines(block: bytes) -> list[dict[str, Any]]:
    found = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                found.append(data)
    return found
