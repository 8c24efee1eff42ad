"""The request path: read the client's request, try candidates in order, relay the answer.

These handlers are plain ASGI callables (no per-request framework objects) because they are the
hot path. For each request they:

1. read the body (refusing one over the size limit before anything goes upstream),
2. ask the routing snapshot for candidates (no database access),
3. try candidates in order: a connect error, a timeout, 408, 429 or 5xx moves on to the next one
   as long as nothing has been sent to the client; any other upstream 4xx goes back as it is,
4. relay the answer: a JSON body as bytes, or SSE blocks as they arrive, ending with [DONE],
5. hand one request record (with one row per attempt) to the recorder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from providers.base import ChatStream, Reply
from router.auth import Authenticator
from router.errors import (
    AllProvidersFailed,
    InvalidJSON,
    InvalidRequest,
    PayloadTooLarge,
    RouterError,
    StreamInterrupted,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from router.limits import InputLimits
from router.recorder import AttemptRecord, Recorder, RequestRecord
from router.routing import Candidate
from router.snapshots import SnapshotManager

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("provider_router.proxy")
_DONE = b"data: [DONE]\n\n"
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientDisconnected(Exception):
    """The client went away before its request was read."""


# Request ids need to be unique, not secret (reading them back needs the admin token), so a
# generator seeded once from the OS is enough; a system call per request showed in profiles.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_request_id() -> str:
    """Time-ordered ids: 12 hex digits of Unix milliseconds, then 16 random hex digits."""
    return f"req_{int(time.time() * 1000):012x}{_ids.getrandbits(64):016x}"


def response_headers(request_id: str, provider_id: str | None, content_type: bytes) -> list[Any]:
    headers = [(b"content-type", content_type), (b"x-request-id", request_id.encode())]
    if provider_id is not None:
        headers.append((b"x-provider-router-provider", provider_id.encode()))
    return headers


async def send_body(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_request(raw: bytes, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Field 'model' is required and must be a string.", param="model")
    for key in required:
        if key not in body:
            raise InvalidRequest(f"Field {key!r} is required.", param=key)
    if "messages" in required and (not isinstance(body["messages"], list) or not body["messages"]):
        raise InvalidRequest("Field 'messages' must be a non-empty array.", param="messages")
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("Field 'stream' must be true or false.", param="stream")
    return body


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Proxy:
    """The two client endpoints: ``/v1/chat/completions`` and ``/v1/embeddings``."""

    def __init__(
        self,
        snapshots: SnapshotManager,
        recorder: Recorder,
        max_body_bytes: int,
        *,
        auth: Authenticator | None = None,
        limits: InputLimits | None = None,
    ):
        self.snapshots = snapshots
        self.recorder = recorder
        self.max_body_bytes = max_body_bytes
        self.auth = auth
        self.limits = limits

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, "chat.completions", ("messages",))

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, "embeddings", ("input",))

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str, required: tuple[str, ...]
    ) -> None:
        started = time.perf_counter()
        record = RequestRecord(
            id=new_request_id(), created_at=int(time.time() * 1000), endpoint=endpoint
        )
        try:
            client = self.auth.authenticate_client(scope["headers"]) if self.auth else None
            if client is not None:
                record.client_key_id, record.client_key = client.id, client
            raw = await read_body(scope, receive, self.max_body_bytes)
            if self.limits is not None:
                self.limits.log_body(record.id, raw)
            body = parse_request(raw, required)
            if self.limits is not None:
                self.limits.check_body(raw, body)
            record.model = body["model"]
            if client is not None:
                client.check_model(body["model"])
            record.stream = endpoint == "chat.completions" and body.get("stream") is True
            candidates = self.snapshots.current.candidates(body["model"])
            await self._attempt_all(candidates, body, record, started, receive, send)
        except RouterError as exc:
            record.status, record.status_code, record.error = "error", exc.status_code, exc.message
            headers = response_headers(record.id, None, b"application/json")
            await send_body(send, exc.status_code, exc.body(), headers)
        except ClientDisconnected:
            record.status, record.status_code = "client_disconnected", 499
        except Exception as exc:
            log.exception("Request %s failed inside provider-router", record.id)
            record.status, record.status_code = "error", 500
            record.error = f"Internal error: {type(exc).__name__}"
            if not record.attempts or record.provider_id is None:
                error = RouterError("provider-router failed to handle this request; see its log.")
                headers = response_headers(record.id, None, b"application/json")
                await send_body(send, 500, error.body(), headers)
        finally:
            record.latency_ms = (time.perf_counter() - started) * 1000
            await self.recorder.record(record)

    async def _attempt_all(
        self,
        candidates: tuple[Candidate, ...],
        body: dict[str, Any],
        record: RequestRecord,
        started: float,
        receive: Receive,
        send: Send,
    ) -> None:
        last: UpstreamError | None = None
        for n, candidate in enumerate(candidates, 1):
            attempt = AttemptRecord(
                n, candidate.provider_id, int(time.time() * 1000), "error", None, 0
            )
            record.attempts.append(attempt)
            attempt_started = time.perf_counter()
            try:
                try:
                    result = await self._send(candidate, body, record)
                except (UpstreamError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    # An adapter bug fails this attempt, not the request.
                    log.exception("Adapter of provider %r failed", candidate.provider_id)
                    raise UpstreamProtocolError(
                        f"Provider {candidate.provider_id!r}: adapter error {type(exc).__name__}."
                    ) from exc
            except UpstreamError as exc:
                attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
                attempt.status_code, attempt.error = exc.status_code, exc.message
                if isinstance(exc, UpstreamStatusError) and not exc.retryable:
                    await self._pass_through(exc, candidate, record, send)
                    return
                last = exc
                continue
            record.provider_id, record.upstream_model = (
                candidate.provider_id,
                candidate.upstream_model,
            )
            if isinstance(result, Reply):
                attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
                attempt.status, attempt.status_code = "success", result.status_code
                headers = response_headers(
                    record.id, candidate.provider_id, result.content_type.encode()
                )
                await send_body(send, result.status_code, result.body, headers)
                record.status, record.status_code = "success", result.status_code
                self._count_usage(record, candidate, result.usage)
            else:
                stream, first = result
                await self._relay(stream, first, candidate, record, started, receive, send)
                attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
                attempt.status = "success" if record.status == "success" else "error"
                attempt.status_code = 200
                attempt.error = record.error
            return
        assert last is not None
        tried = len(record.attempts)
        raise AllProvidersFailed(
            f"All {tried} provider(s) for model {record.model!r} failed; last error: {last.message}"
        )

    async def _send(
        self, candidate: Candidate, body: dict[str, Any], record: RequestRecord
    ) -> Reply | tuple[ChatStream, bytes | None]:
        adapter = candidate.adapter
        if record.endpoint == "embeddings":
            return await adapter.embeddings(body, candidate.upstream_model)
        if not record.stream:
            return await adapter.chat(body, candidate.upstream_model)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stream = await adapter.chat_stream(
            body, candidate.upstream_model, include_usage=include_usage
        )
        # Wait for the first block before answering, so a stream that dies at once can still
        # fall back to the next provider.
        try:
            first = await anext(aiter(stream))
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        return stream, first

    async def _pass_through(
        self, exc: UpstreamStatusError, candidate: Candidate, record: RequestRecord, send: Send
    ) -> None:
        record.provider_id, record.upstream_model = candidate.provider_id, candidate.upstream_model
        status = exc.status_code or 502
        record.status, record.status_code, record.error = "error", status, exc.message
        headers = response_headers(record.id, candidate.provider_id, exc.content_type.encode())
        await send_body(send, status, exc.body, headers)

    async def _relay(
        self,
        stream: ChatStream,
        first: bytes | None,
        candidate: Candidate,
        record: RequestRecord,
        started: float,
        receive: Receive,
        send: Send,
    ) -> None:
        async def pump() -> None:
            headers = response_headers(record.id, candidate.provider_id, b"")
            headers[0] = _SSE_HEADERS[0]
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": headers + _SSE_HEADERS[1:],
                }
            )
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            record.ttft_ms = (time.perf_counter() - started) * 1000
            try:
                async for block in stream:
                    await send({"type": "http.response.body", "body": block, "more_body": True})
            except UpstreamError as exc:
                record.status, record.status_code, record.error = "error", 502, exc.message
                error = StreamInterrupted(f"The upstream stream broke off: {exc.message}")
                event = b"data: " + error.body() + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": False})
                return
            await send({"type": "http.response.body", "body": _DONE, "more_body": False})
            record.status, record.status_code = "success", 200

        relay = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not relay.done():
                relay.cancel()
                record.status, record.status_code = "client_disconnected", 499
                record.error = "The client disconnected during the stream."
            watcher.cancel()
            await asyncio.gather(relay, watcher, return_exceptions=True)
            await stream.aclose()
        if not relay.cancelled() and relay.exception() is not None:
            raise relay.exception()  # type: ignore[misc]
        self._count_usage(record, candidate, stream.usage)

    @staticmethod
    def _count_usage(record: RequestRecord, candidate: Candidate, usage: Any) -> None:
        if usage is None:
            return
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        record.total_tokens = usage.total_tokens
        record.cost = candidate.cost(usage.prompt_tokens, usage.completion_tokens)
        record.currency = candidate.currency if record.cost is not None else None
