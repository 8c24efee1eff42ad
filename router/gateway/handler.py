"""The request path: read the client's request, try candidates in order, relay the answer.

These handlers are plain ASGI callables (no per-request framework objects) because they are the
hot path. For each request they:

1. read the body (refusing one over the size limit before anything goes upstream) and let the
   endpoint's front door (:mod:`router.doors`) parse it into the router's request,
2. ask the routing snapshot for candidates (no database access),
3. try candidates in the order :func:`routing.spread` gives (tiers by priority, weighted
   random inside a tier), skipping open circuits and providers at a rate limit, each provider
   once, at most ``max_attempts`` tries: a connect error, a timeout, 408, 429 or 5xx moves on
   to the next one as long as nothing has been sent to the client; any other upstream 4xx goes
   back as it is. Only a refused connection is retried on the same provider (jittered backoff),
4. relay the answer: a JSON body as bytes, or SSE blocks as they arrive, ending as the door says
   ([DONE] for chat); a stream that breaks, stalls (idle timeout) or runs out of time ends with
   the door's error event. A door in another dialect renders the adapter's chat answer in its
   own, unless the candidate's adapter speaks that dialect natively (then the client's body
   goes through with only the model replaced, and the upstream's bytes come back),
5. hand one request record (with one row per attempt) to the recorder.

A client that hangs up at any point cancels the upstream call at once; its attempt is recorded
as ``client_closed`` and does not count against the provider.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from providers.base import ChatStream, Reply
from router.doors.base import FrontDoor, RouterRequest
from router.doors.chat import ChatDoor, EmbeddingsDoor
from router.doors.messages import MessagesDoor
from router.doors.responses import ResponsesDoor
from router.doors.responses_keeper import ResponseKeeper
from router.errors import (
    AdapterFailure,
    AllProvidersFailed,
    AuthenticationError,
    ClientRateLimited,
    GatewayOverloaded,
    KeyRevoked,
    LocalLimitReached,
    PayloadTooLarge,
    ProvidersCoolingDown,
    RateLimited,
    RouterError,
    StreamInterrupted,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnsupported,
)
from router.gateway.access import log_access
from router.gateway.auth import Authenticator, ClientKey, presented_prefix
from router.gateway.disconnect import DisconnectGuard, Expiry
from router.gateway.limits import InputLimits
from router.gateway.metrics import Metrics
from router.gateway.overload import OverloadLog
from router.gateway.recorder import AttemptRecord, Recorder, RequestRecord
from router.gateway.routing import Candidate, spread
from router.gateway.snapshots import SnapshotManager
from router.gateway.tracing import Tracing
from router.logs import request_id_var
from router.resilience.policy import ClientCheck, Resilience, client_key, provider_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("provider_router.proxy")
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


# The longest Retry-After sent. OpenAI's SDKs wait for a Retry-After of up to 60 s and ignore a
# longer one; a client is better told not to retry (x-should-retry: false) than to sit out a
# ten-minute cooldown inside one call. The message still says how long the wait really is.
MAX_RETRY_AFTER_S = 60


def _retry_headers(exc: RouterError) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` (whole seconds, honest up to the cap) and ``x-should-retry``."""
    headers = []
    should_retry = exc.should_retry
    seconds = getattr(exc, "retry_after", None)
    if seconds is not None:
        wait = max(1, math.ceil(seconds))
        if wait > MAX_RETRY_AFTER_S:
            wait, should_retry = MAX_RETRY_AFTER_S, False
        headers.append((b"retry-after", str(wait).encode()))
    if should_retry is not None:
        headers.append((b"x-should-retry", b"true" if should_retry else b"false"))
    return headers


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


class Proxy:
    """The client endpoints: one attempt loop behind every front door."""

    chat_door = ChatDoor()
    embeddings_door = EmbeddingsDoor()
    messages_door = MessagesDoor()

    def __init__(
        self,
        snapshots: SnapshotManager,
        recorder: Recorder,
        max_body_bytes: int,
        *,
        auth: Authenticator | None = None,
        limits: InputLimits | None = None,
        resilience: Resilience | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        access_log: bool = False,
        responses: ResponseKeeper | None = None,
    ):
        self.snapshots = snapshots
        self.recorder = recorder
        self.max_body_bytes = max_body_bytes
        self.resilience = resilience or Resilience()
        self.auth = auth
        self.limits = limits
        self.metrics = metrics
        self.tracing = tracing
        self.access_log = access_log
        # Plain integers the metrics read at scrape time: the request path only adds to them.
        self.inflight = 0
        self.client_rate_limited = 0
        self.overload = OverloadLog()
        self.responses_door = ResponsesDoor(responses)

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(self.chat_door, scope, receive, send)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(self.embeddings_door, scope, receive, send)

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(self.messages_door, scope, receive, send)

    async def responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(self.responses_door, scope, receive, send)

    async def handle(self, door: FrontDoor, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request that came in through ``door``."""
        started = time.perf_counter()
        record = RequestRecord(
            id=new_request_id(), created_at=int(time.time() * 1000), endpoint=door.endpoint
        )
        guard: DisconnectGuard | None = None
        self.inflight += 1
        context = request_id_var.set(record.id)
        refused = False
        try:
            client = self.auth.authenticate_client(scope["headers"]) if self.auth else None
            if client is not None:
                record.client_key_id, record.client_key = client.id, client
            raw = await read_body(scope, receive, self.max_body_bytes)
            if self.limits is not None:
                self.limits.log_body(record.id, raw)
            request = door.parse(raw, scope["headers"])
            record.model = request.model
            if door.stateful:
                # Before the limits: they apply to the whole conversation it continues.
                await door.prepare(request, client.id if client else None, record.id)
            if self.limits is not None:
                self.limits.check_body(raw, request.body)
            if client is not None:
                client.check_model(request.model)
            record.stream = request.stream
            record.snapshot = snapshot = self.snapshots.current
            candidates = snapshot.candidates(request.model)
            if request.untranslatable is not None and not any(
                door.dialect in c.adapter.native_dialects for c in candidates
            ):
                raise request.untranslatable
            if self.tracing is not None and self.tracing.capture_content:
                record.content = [raw[: self.tracing.content_max_bytes]]
            client_check = None
            if client is not None and (client.rpm_limit or client.tpm_limit):
                # Per process: checked now. Shared: goes to Redis with the first admission.
                client_check = self.resilience.check_client(client)
            guard = DisconnectGuard(receive)
            await self._attempt_all(
                candidates, door, request, record, started, guard, send, client_check
            )
        except RouterError as exc:
            if guard is not None:
                guard.stop()
            if isinstance(exc, ClientRateLimited):
                self.client_rate_limited += 1
            record.status, record.status_code, record.error = "error", exc.status_code, exc.message
            refused = isinstance(exc, AuthenticationError)
            if record.provider_id is None and record.attempts:
                # A failure after tries belongs to the last provider tried, so per-provider
                # filters and stats count it (every attempt's provider stays in `attempts`).
                record.provider_id = record.attempts[-1].provider_id
            if exc.code == "model_denied":
                record.skip(None, "key_not_allowed")
            headers = response_headers(record.id, None, b"application/json")
            headers += _retry_headers(exc)
            status, body = door.error(exc)
            await send_body(send, status, body, headers)
        except ClientDisconnected:
            record.status, record.status_code = "client_closed", 499
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if guard is None or not guard.gone or task is None or task.uncancel() > 0:
                raise
            record.status, record.status_code = "client_closed", 499
            record.error = "The client disconnected while waiting for the upstream."
        except Exception as exc:
            if guard is not None:
                guard.stop()
            log.exception("Request %s failed inside provider-router", record.id)
            record.status, record.status_code = "error", 500
            record.error = f"Internal error: {type(exc).__name__}"
            if not record.attempts or record.provider_id is None:
                error = RouterError("provider-router failed to handle this request; see its log.")
                headers = response_headers(record.id, None, b"application/json")
                await send_body(send, *door.error(error), headers)
        finally:
            if guard is not None:
                guard.stop()
            record.latency_ms = (time.perf_counter() - started) * 1000
            self.inflight -= 1
            if self.metrics is not None or self.access_log or self.tracing is not None:
                self._observe(record, scope)
            request_id_var.reset(context)
            if refused:
                # Counted, not recorded row by row: anyone who reaches the port can send these.
                client_address = scope.get("client")
                self.recorder.auth_failed(
                    record.created_at,
                    client_address[0] if client_address else "",
                    presented_prefix(scope["headers"]),
                    door.endpoint,
                )
            else:
                await self.recorder.record(record)

    def _observe(self, record: RequestRecord, scope: Scope) -> None:
        """Count, log and trace one finished request. A failure here is logged and goes no
        further: the answer is out, and the history row must still be written."""
        try:
            if self.metrics is not None:
                self.metrics.observe(record)
            if self.access_log:
                log_access(record)
            if self.tracing is not None:
                self.tracing.export(record, scope["headers"])
        except Exception:
            log.exception("Could not count, log or trace request %s", record.id)

    async def _attempt_all(
        self,
        candidates: tuple[Candidate, ...],
        door: FrontDoor,
        request: RouterRequest,
        record: RequestRecord,
        started: float,
        guard: DisconnectGuard,
        send: Send,
        client_check: ClientCheck | None = None,
    ) -> None:
        res = self.resilience
        last: UpstreamError | None = None
        blamed = False  # whether a provider failed (not only the proxy's own limits)
        throttled: list[float] = []  # the cooldowns of tried providers that answered 429
        limited: list[float] = []
        cooling: list[float] = []
        faults = 0  # attempts that failed on the provider's setup (credential, model)
        record.order = spread(candidates, res.rng) if len(candidates) > 1 else candidates
        for candidate in record.order:
            if len(record.attempts) >= res.max_attempts:
                break
            verdict = await res.admit(
                candidate.provider_id,
                candidate.limits,
                record,
                candidate.timeouts.total_s,
                client_check,
            )
            client_check = None
            if verdict is not None:
                reason, wait = verdict
                record.skip(candidate.provider_id, reason, wait)
                if reason == "circuit_open":
                    cooling.append(wait)
                    continue
                limited.append(wait)
                res.log_limited(
                    f"skip:{candidate.provider_id}", logging.INFO,
                    "Provider %r skipped: at its rate limit for %.1f s more.",
                    candidate.provider_id, wait,
                )  # fmt: skip
                continue
            breaker = res.breakers.get(candidate.provider_id)
            retries = 0
            try:
                while True:
                    failure = await self._try(
                        candidate, door, request, record, started, guard, send
                    )
                    if failure is None:
                        return
                    retry = (
                        isinstance(failure, UpstreamConnectError)
                        # A refused connection is cheap to retry; a connect timeout is not.
                        and not isinstance(failure.__cause__, httpx.ConnectTimeout)
                        and retries < res.connect_retries
                        and len(record.attempts) < res.max_attempts
                    )
                    if not retry:
                        break
                    await asyncio.sleep(res.backoff(retries))
                    retries += 1
            except BaseException:
                # Whatever ended the request (also during the backoff), a half-open probe it
                # held must not stay taken.
                breaker.release(record)
                raise
            res.failed(candidate.provider_id, failure, record)
            last = failure
            if isinstance(failure, LocalLimitReached):
                self.overload.report(failure.limit, failure.message)
            else:
                blamed = True
            if isinstance(failure, UpstreamStatusError) and failure.fault is not None:
                faults += 1
            if isinstance(failure, UpstreamStatusError) and failure.status_code == 429:
                throttled.append(breaker.retry_in())
        if client_check is not None:  # no candidate reached admission: the client's verdict first
            await res.settle_client(client_check)
        if last is not None and len(throttled) == len({a.provider_id for a in record.attempts}):
            # Every provider tried said "too many requests": that is the client's answer too,
            # with the soonest moment one of them (or a skipped one) may be tried again.
            wait = min(throttled + limited + cooling)
            raise RateLimited(
                f"Every provider of model {record.model!r} is rate-limited upstream "
                f"(last: {last.message}); retry in {math.ceil(wait)} s.",
                retry_after=wait,
            )
        if last is not None and not blamed:
            # Nothing reached a provider: the proxy itself is at a limit, and says so.
            raise GatewayOverloaded(f"{last.message} Retry in a moment.", retry_after=1)
        if last is not None:
            tried = len(record.attempts)
            failed = AllProvidersFailed(
                f"All {tried} attempt(s) for model {record.model!r} failed; "
                f"last error: {last.message}",
                code=last.code,
            )
            if faults == tried:
                failed.should_retry = False  # each provider is misconfigured: retrying won't help
            raise failed
        if limited:
            wait = min(limited + cooling)
            raise RateLimited(
                f"Every provider of model {record.model!r} is at its rate limit; "
                f"retry in {math.ceil(wait)} s.",
                retry_after=wait,
            )
        wait = min(cooling)
        raise ProvidersCoolingDown(
            f"Every provider of model {record.model!r} is cooling down after failures; retry in "
            f"{math.ceil(wait)} s, or reset one with POST /v1/providers/{{id}}/reset.",
            retry_after=wait,
        )

    async def _try(
        self,
        candidate: Candidate,
        door: FrontDoor,
        request: RouterRequest,
        record: RequestRecord,
        started: float,
        guard: DisconnectGuard,
        send: Send,
    ) -> UpstreamError | None:
        """One upstream attempt. Returns None when an answer reached the client (or the client
        left), or the failure when the loop may still try elsewhere."""
        provider_id = candidate.provider_id
        breaker = self.resilience.breakers.get(provider_id)
        attempt = AttemptRecord(
            len(record.attempts) + 1, provider_id, int(time.time() * 1000), "error", None, 0
        )
        record.attempts.append(attempt)
        attempt_started = time.perf_counter()
        timeouts = candidate.timeouts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total_s
        first_byte_s = min(timeouts.first_byte_s, timeouts.total_s)
        # A bare timer rather than asyncio.timeout(): a third of the cost, on every request.
        expired = Expiry(asyncio.current_task())
        timer = loop.call_later(first_byte_s, expired.fire)
        try:
            try:
                result = await self._send(candidate, door, request)
            except asyncio.CancelledError:
                if expired.fired and expired.uncancel() == 0:
                    raise UpstreamTimeout(
                        f"Provider {provider_id!r}: no answer within "
                        f"{round(first_byte_s * 1000)} ms (first-byte timeout)."
                    ) from None
                raise
            except UpstreamError:
                raise
            except Exception as exc:
                # An adapter bug fails this attempt, not the request (nor the provider).
                log.exception("Adapter of provider %r failed", provider_id)
                raise AdapterFailure(
                    f"Provider {provider_id!r}: adapter error {type(exc).__name__}."
                ) from exc
            finally:
                timer.cancel()
        except asyncio.CancelledError:
            attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
            attempt.status, attempt.error = "client_closed", "The client disconnected."
            breaker.release(record)
            raise
        except UpstreamError as exc:
            attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
            attempt.status_code, attempt.error = exc.status_code, exc.message
            if isinstance(exc, UpstreamTimeout) or isinstance(exc.__cause__, httpx.ConnectTimeout):
                attempt.status = "timeout"
            if isinstance(exc, UpstreamStatusError) and not exc.retryable:
                breaker.release(record)
                guard.stop()
                await self._pass_through(exc, door, candidate, record, send)
                return None
            return exc
        record.provider_id, record.upstream_model = provider_id, candidate.upstream_model
        if isinstance(result, Reply):
            guard.stop()
            attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
            attempt.status, attempt.status_code = "success", result.status_code
            breaker.success()
            if attempt.n > 1:
                self._fell_back(record, provider_id)
            headers = response_headers(record.id, provider_id, result.content_type.encode())
            await send_body(send, result.status_code, result.body, headers)
            if self.limits is not None:
                self.limits.log_body(record.id, result.body, "Response")
            if record.content is not None and self.tracing is not None:
                record.content.append(result.body[: self.tracing.content_max_bytes])
            record.status, record.status_code = "success", result.status_code
            self._count_usage(record, candidate, result.usage)
            return None
        stream, first = result
        failure = await self._relay(
            stream, first, door, request, candidate, record, started, deadline, guard, send
        )
        attempt.latency_ms = (time.perf_counter() - attempt_started) * 1000
        attempt.status_code = 200
        if record.status == "success":
            attempt.status = "success"
            breaker.success()
            if attempt.n > 1:
                self._fell_back(record, provider_id)
        elif record.status == "client_closed":
            attempt.status = "client_closed"
            breaker.release(record)
        elif isinstance(failure, KeyRevoked):
            # The provider answered; the client lost the right to the rest of it.
            attempt.status, attempt.error = "client_closed", record.error
            breaker.release(record)
        else:
            attempt.status = "timeout" if isinstance(failure, UpstreamTimeout) else "error"
            attempt.error = record.error
            if failure is not None:
                self.resilience.failed(provider_id, failure, record)
        return None

    def _fell_back(self, record: RequestRecord, provider_id: str) -> None:
        failed = [a.provider_id for a in record.attempts[:-1]]
        self.resilience.log_limited(
            f"fallback:{provider_id}", logging.INFO,
            "Request %s fell back to provider %r after %d failed attempt(s) (%s).",
            record.id, provider_id, len(failed), ", ".join(dict.fromkeys(failed)),
        )  # fmt: skip

    async def _send(
        self, candidate: Candidate, door: FrontDoor, request: RouterRequest
    ) -> Reply | tuple[ChatStream, bytes | None]:
        adapter = candidate.adapter
        body = request.body
        if request.embeddings:
            return await adapter.embeddings(body, candidate.upstream_model)
        dialect = door.dialect
        if dialect is not None and dialect in adapter.native_dialects:
            assert request.native is not None
            result = await adapter.send_native(
                dialect,
                request.native,
                candidate.upstream_model,
                request.native_headers,
                stream=request.stream,
            )
            result = door.native_answer(result, request)
            if isinstance(result, Reply):
                return result
            stream = result
        elif request.untranslatable is not None:
            raise UpstreamUnsupported(
                f"Provider {candidate.provider_id!r} (type {adapter.type!r}) cannot take this "
                f"request: {request.untranslatable.message}"
            )
        elif not request.stream:
            reply = await adapter.chat(body, candidate.upstream_model)
            return door.reply(reply, request) if door.translates else reply
        else:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stream = await adapter.chat_stream(
                body, candidate.upstream_model, include_usage=include_usage
            )
            if door.translates:
                stream = door.stream(stream, request)
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
        self,
        exc: UpstreamStatusError,
        door: FrontDoor,
        candidate: Candidate,
        record: RequestRecord,
        send: Send,
    ) -> None:
        record.provider_id, record.upstream_model = candidate.provider_id, candidate.upstream_model
        status, body, content_type = door.upstream_error(exc)
        record.status, record.status_code, record.error = "error", status, exc.message
        headers = response_headers(record.id, candidate.provider_id, content_type.encode())
        await send_body(send, status, body, headers)

    async def _relay(
        self,
        stream: ChatStream,
        first: bytes | None,
        door: FrontDoor,
        request: RouterRequest,
        candidate: Candidate,
        record: RequestRecord,
        started: float,
        deadline: float,
        guard: DisconnectGuard,
        send: Send,
    ) -> UpstreamError | KeyRevoked | None:
        """Relay the stream; return the failure that ended it early, if any: the upstream's,
        or the revocation of the client's key.

        Runs in the request's own task (no task per stream): the still armed ``guard``
        cancels it when the client hangs up, and it is disarmed before the last message.
        """
        failure: UpstreamError | KeyRevoked | None = None
        kept = None
        if self.limits is not None and (self.limits.log_bodies or record.content is not None):
            send, kept = self.limits.capture(send)
        try:
            headers = response_headers(record.id, candidate.provider_id, b"")
            headers[0] = _SSE_HEADERS[0]
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": headers + _SSE_HEADERS[1:]})
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            record.ttft_ms = (time.perf_counter() - started) * 1000
            client = record.client_key
            auth = self.auth if client is not None else None
            failure = await self._pump(stream, candidate, deadline, send, client, auth)
            guard.stop()
            if isinstance(failure, KeyRevoked):
                record.status, record.status_code, record.error = "error", 401, failure.message
                event = door.stream_error(failure, request)
                await send({"type": "http.response.body", "body": event, "more_body": False})
            elif failure is not None:
                record.status, record.status_code, record.error = "error", 502, failure.message
                error = StreamInterrupted(
                    f"The upstream stream broke off: {failure.message}",
                    upstream=failure,
                    code=failure.code,
                )
                event = door.stream_error(error, request)
                await send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                end = door.stream_end
                await send({"type": "http.response.body", "body": end, "more_body": False})
                record.status, record.status_code = "success", 200
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not guard.gone or task is None or task.uncancel() > 0:
                raise
            record.status, record.status_code = "client_closed", 499
            record.error = "The client disconnected during the stream."
        finally:
            guard.stop()
            await stream.aclose()
            if kept is not None and self.limits is not None:
                self.limits.log_body(record.id, bytes(kept), "Response")
                if record.content is not None:
                    record.content.append(bytes(kept))
        self._count_usage(record, candidate, stream.usage)
        return failure

    @staticmethod
    async def _pump(
        stream: ChatStream,
        candidate: Candidate,
        deadline: float,
        send: Send,
        client: ClientKey | None,
        auth: Authenticator | None,
    ) -> UpstreamError | KeyRevoked | None:
        """Send the stream's blocks on; the idle timer only runs while waiting upstream.

        With ``auth`` (a request made with a client key), a block that arrives after the key
        was revoked or disabled is not sent: the stream ends with a ``key_revoked`` error.
        """
        loop = asyncio.get_running_loop()
        idle_s = candidate.timeouts.idle_s
        blocks = aiter(stream)
        try:
            async with asyncio.timeout(None) as timer:
                while True:
                    timer.reschedule(min(loop.time() + idle_s, deadline))
                    try:
                        block = await anext(blocks)
                    except StopAsyncIteration:
                        return None
                    timer.reschedule(None)
                    if auth is not None and client is not None and client.id not in auth.live_ids:
                        return KeyRevoked(
                            f"The client key {client.name!r} was revoked during this stream; "
                            "the rest of the answer is not sent."
                        )
                    await send({"type": "http.response.body", "body": block, "more_body": True})
        except TimeoutError:
            which = "total" if loop.time() >= deadline else "idle"
            return UpstreamTimeout(
                f"Provider {candidate.provider_id!r}: the stream stalled ({which} timeout)."
            )
        except UpstreamError as exc:
            return exc
        except Exception as exc:
            # An adapter bug mid-stream still ends the stream with an error event.
            log.exception("Adapter of provider %r failed mid-stream", candidate.provider_id)
            return AdapterFailure(
                f"Provider {candidate.provider_id!r}: adapter error {type(exc).__name__}."
            )

    def _count_usage(self, record: RequestRecord, candidate: Candidate, usage: Any) -> None:
        if usage is None:
            return
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        record.total_tokens = usage.total_tokens
        record.cost = candidate.cost(usage.prompt_tokens, usage.completion_tokens)
        record.currency = candidate.currency if record.cost is not None else None
        if candidate.limits is not None and candidate.limits.tpm is not None:
            self.resilience.limiter.add_tokens(
                provider_key(candidate.provider_id), usage.total_tokens
            )
        client = record.client_key
        if client is not None and client.tpm_limit is not None:
            self.resilience.limiter.add_tokens(client_key(client.id), usage.total_tokens)
