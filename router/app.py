"""The application: ``create_app(settings)`` builds it; the lifespan opens and closes everything.

The client endpoints that carry the load (chat completions, embeddings, messages) are dispatched
straight to :class:`router.gateway.handler.Proxy`; everything else goes through Starlette's router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers.base import AdapterOptions
from router.api import health as health_api
from router.api import keys as keys_api
from router.api import metrics as metrics_api
from router.api import models as models_api
from router.api import providers as providers_api
from router.api import requests as requests_api
from router.api import responses as responses_api
from router.api import routes as more_routes
from router.api.common import Services, json_response, services
from router.doors.messages import is_messages_path
from router.doors.responses import is_responses_path
from router.doors.responses_keeper import ResponseKeeper
from router.errors import InvalidRequest, NotFound, RouterError, database_write_error
from router.gateway.auth import Authenticator, resolve_admin_token
from router.gateway.count import TokenCounter
from router.gateway.handler import Proxy, Receive, Scope, Send, send_body
from router.gateway.health import start_health_checks
from router.gateway.limits import InputLimits
from router.gateway.metrics import Metrics
from router.gateway.origins import WebGuard
from router.gateway.recorder import Recorder
from router.gateway.snapshots import ConfigChanges, SnapshotManager
from router.gateway.tracing import Tracing
from router.resilience.policy import (
    Resilience,
    mirror_shared,
    publish_circuits,
    timeouts_from_settings,
    write_circuit_changes,
)
from router.settings import Settings
from router.store import backend, retention
from router.store.backend import database_for, has_table
from router.store.credentials import prepare_credentials
from router.store.db import DatabaseError, WriteRefused
from router.store.seed import seed_from_config
from router.transport.limits import ResponseLimits
from router.ui import UI
from router.ui import mount as ui_mount
from router.ui.session import Sessions

log = logging.getLogger("provider_router.app")
# A last write at shutdown that may fail without stopping the history flush after it.
_SHUTDOWN_WRITE_ERRORS: tuple[type[Exception], ...] = (*DatabaseError, TimeoutError)
CLOSING_S = 0.5  # of server.shutdown_grace_ms, left for closing after the last history write


async def prepare_database(settings: Settings) -> None:
    """Apply pending migrations, check the secret key (encrypting any plaintext credential),
    and seed an empty catalog from the config file."""
    db = database_for(settings)
    if settings.database_is_postgres or settings.database_path.exists():
        # Check the key and encrypt any plaintext credential before the pre-migration backup
        # is taken, so that backup holds no plaintext either.
        await db.open()
        try:
            if await has_table(db, "provider_configs"):
                await prepare_credentials(db)
        finally:
            await db.close()
    applied, backup = await backend.migrate(settings)
    if backup is not None:
        log.info("Backed up the database to %s before migrating", backup)
    for migration in applied:
        log.info("Applied migration %04d_%s", migration.version, migration.name)
    if not settings.database_is_postgres:
        advice = await asyncio.to_thread(retention.ensure_incremental, settings.database_path)
        if advice is not None:
            log.warning("%s", advice)
    await db.open()
    try:
        await prepare_credentials(db)
        if settings.seed_providers:
            await seed_from_config(db, settings.seed_providers, settings.config_path or "config")
    finally:
        await db.close()


async def health(request: Request) -> Response:
    app = services(request)
    recorder = app.recorder
    shared = app.proxy.resilience.shared_status()
    return json_response(
        {
            "status": "degraded" if shared.get("state") == "unreachable" else "ok",
            "config_version": app.snapshots.current.version,
            "models": len(app.snapshots.current.routes),
            "recorder": {
                "queued": recorder.queue.qsize(),
                "written": recorder.written,
                "waits": recorder.waits,
                "failed": recorder.failed,
                "dropped": recorder.rows_dropped,
                "writing": recorder.healthy,
            },
            "shared_state": shared,
        }
    )


def error_answer(path: str, error: RouterError) -> tuple[int, bytes]:
    """(status, body) of an error answered before any front door parsed the request: in
    Anthropic's shape under the Messages API (its clients read no other), OpenAI's elsewhere."""
    if is_messages_path(path):
        return Proxy.messages_door.error(error)
    return error.status_code, error.body()


async def render_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RouterError):
        error = exc
    elif isinstance(exc, WriteRefused):
        # A full disk, a locked file, PostgreSQL unreachable: the operator's problem, said in a
        # sentence, not a 500.
        log.warning("A %s %s could not be written: %s", request.method, request.url.path, exc)
        error = database_write_error(exc)
    elif isinstance(exc, HTTPException) and exc.status_code == 404:
        error = NotFound(f"No endpoint {request.method} {request.url.path}.")
    elif isinstance(exc, HTTPException):
        # A 4xx (405 Method Not Allowed, say) is the caller's mistake, not a server_error.
        error = (InvalidRequest if exc.status_code < 500 else RouterError)(str(exc.detail))
        return Response(
            error.body(), status_code=exc.status_code, media_type="application/json",
            headers=exc.headers,
        )  # fmt: skip
    else:
        log.exception("Unhandled error in %s %s", request.method, request.url.path)
        error = RouterError("provider-router failed to handle this request; see its log.")
    status, body = error_answer(request.url.path, error)
    return Response(body, status_code=status, media_type="application/json")


def with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` headers to the response's start."""

    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sending


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """No endpoint speaks WebSocket. Codex tries one on ``GET /v1/responses`` and falls back to
    HTTP on a 426 at once, so the handshake is answered with one when the server can send an
    HTTP answer to it (the ASGI denial-response extension), else closed."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    if is_responses_path(scope["path"]):
        status, body = (
            426,
            InvalidRequest(responses_api.UPGRADE_REFUSED, code="websocket_not_supported").body(),
        )
    else:
        status, body = 404, NotFound(f"No WebSocket endpoint at {scope['path']}.").body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


class ProviderRouterApp:
    """The ASGI application. Build it with :func:`create_app`."""

    def __init__(self, settings: Settings, *, tracer_provider: Any = None) -> None:
        self.settings = settings
        self.tracer_provider = tracer_provider
        self.services: Services | None = None
        # When the server was told to stop (time.monotonic()); the shutdown grace counts from it.
        self.shutdown_started: float | None = None
        self.limits: InputLimits | None = None
        self.guard: WebGuard | None = None
        self._fast: dict[str, Any] = {}
        self.starlette = Starlette(
            routes=[
                Route("/health", health, methods=["GET"]),
                *models_api.routes,
                *providers_api.routes,
                *more_routes.routes,
                *requests_api.routes,
                *health_api.routes,
                *keys_api.routes,
                *(metrics_api.routes if settings.metrics_enabled else []),
                *responses_api.routes,
                *([ui_mount()] if settings.ui_enabled else []),
            ],
            # RouterError by name: handlers for Exception run in ServerErrorMiddleware, which
            # answers and then re-raises (a traceback in the log for a plain 400).
            exception_handlers={
                RouterError: render_error,
                HTTPException: render_error,
                **dict.fromkeys(WriteRefused, render_error),
                Exception: render_error,
            },
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limits is not None and self.guard is not None:
            try:
                self.limits.check_headers(scope["headers"])
                cross_origin = self.guard.admit(scope)
            except RouterError as exc:
                status, body = error_answer(scope["path"], exc)
                await send_body(send, status, body, [(b"content-type", b"application/json")])
                return
            if cross_origin is not None:
                if self.guard.is_preflight(scope):
                    headers = self.guard.preflight_headers(cross_origin, scope["headers"])
                    await send_body(send, 204, b"", headers)
                    return
                send = with_headers(send, self.guard.cors_headers(cross_origin))
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._fast.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            return
        await self.starlette(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        await prepare_database(settings)
        db = database_for(settings)
        await db.open()
        changes = ConfigChanges()
        snapshots = SnapshotManager(
            db,
            AdapterOptions(
                # A socket read may wait as long as the first-byte or idle timeout allows;
                # those, not the read timeout, decide when an answer is too slow.
                timeout_ms=max(
                    settings.upstream_timeout_ms,
                    settings.upstream_first_byte_timeout_ms,
                    settings.upstream_idle_timeout_ms,
                ),
                connect_timeout_ms=settings.upstream_connect_timeout_ms,
                max_connections=settings.upstream_max_connections,
                # Below the first-byte timer, which also runs while a request waits for a
                # connection: that wait is the proxy's limit, not the provider's slowness.
                pool_timeout_ms=min(
                    settings.upstream_pool_timeout_ms,
                    max(1, settings.upstream_first_byte_timeout_ms // 2),
                ),
                response_limits=ResponseLimits.from_settings(settings),
            ),
            timeouts=timeouts_from_settings(settings),
            changes=changes,
        )
        recorder = Recorder(
            db,
            queue_size=settings.recorder_queue_size,
            batch_size=settings.recorder_batch_size,
            flush_interval_s=settings.recorder_flush_interval_ms / 1000,
            retry_s=settings.recorder_retry_ms / 1000,
        )
        auth = Authenticator(
            resolve_admin_token(settings), require_client_keys=settings.require_client_keys
        )
        self.limits = InputLimits(settings)
        tracing = Tracing.from_settings(settings, os.environ, self.tracer_provider)
        self.guard = WebGuard(settings, auth)
        proxy = Proxy(
            snapshots,
            recorder,
            settings.max_body_bytes,
            auth=auth,
            limits=self.limits,
            resilience=Resilience.from_settings(settings),
            tracing=tracing,
            access_log=settings.access_log,
            responses=(keeper := ResponseKeeper(db)),
        )
        if settings.metrics_enabled:
            proxy.metrics = Metrics(
                snapshots,
                recorder,
                proxy.resilience,
                inflight=lambda: proxy.inflight,
                client_rate_limited=lambda: proxy.client_rate_limited,
            )
        await snapshots.rebuild()
        await auth.reload(db)
        recorder.start()
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(
            snapshots.watch(settings.reload_interval_ms / 1000), name="config-watcher"
        )
        health = start_health_checks(db, snapshots, proxy.resilience, settings)
        circuits = loop.create_task(
            publish_circuits(db, proxy.resilience, settings.reload_interval_ms / 1000),
            name="circuit-states",
        )
        mirror = None
        if proxy.resilience.shared is not None:
            shared = proxy.resilience.shared
            log.info(
                "Rate limits and circuits are shared through Redis at %s (redis.on_failure = %r)",
                shared.url, shared.on_failure,
            )  # fmt: skip
            mirror = loop.create_task(
                mirror_shared(
                    proxy.resilience,
                    lambda: sorted(snapshots.adapters()),
                    settings.reload_interval_ms / 1000,
                ),
                name="shared-state-mirror",
            )
        key_watcher = loop.create_task(
            auth.watch(db, settings.reload_interval_ms / 1000, changes), name="client-key-watcher"
        )
        # PostgreSQL tells every replica of a config change at once; polling stays beneath it.
        listener = (
            loop.create_task(changes.follow(db), name="config-listener") if db.notifies else None
        )
        pruner = retention.HistoryPruner(
            db,
            retention_days=settings.history_retention_days,
            max_rows=settings.history_max_rows or None,
            interval_s=settings.history_prune_interval_ms / 1000,
        )
        pruning = loop.create_task(pruner.run(), name="history-pruner") if pruner.enabled else None
        self.services = Services(
            settings, db, snapshots, recorder, auth, proxy, metrics=proxy.metrics, tracing=tracing
        )
        app.state.services = self.services
        app.state.ui = UI.build(
            Sessions(auth, settings.ui_session_ttl_ms, settings.ui_sign_in_delay_ms / 1000)
        )
        for prefix in ("/v1", ""):
            self._fast[f"{prefix}/chat/completions"] = proxy.chat_completions
            self._fast[f"{prefix}/embeddings"] = proxy.embeddings
            self._fast[f"{prefix}/messages"] = proxy.messages
            self._fast[f"{prefix}/messages/count_tokens"] = TokenCounter(proxy)
            self._fast[f"{prefix}/responses"] = proxy.responses
        try:
            yield
        finally:
            self._fast.clear()
            started = self.shutdown_started or time.monotonic()
            grace_s = settings.shutdown_grace_ms / 1000

            def left() -> float:
                return max(grace_s - (time.monotonic() - started), 0.1)

            for task in (listener, watcher, key_watcher, health, circuits, mirror, pruning):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            try:
                await asyncio.wait_for(auth.flush_last_used(db), left())
            except _SHUTDOWN_WRITE_ERRORS as exc:
                # Losing a last-used stamp must not stop the history rows from being written.
                why = str(exc) or "out of time"
                log.warning("Could not write the client keys' last_used_at: %s", why)
            except Exception:
                log.exception("Could not write the client keys' last_used_at")
            try:
                await asyncio.wait_for(write_circuit_changes(db, proxy.resilience), left())
            except _SHUTDOWN_WRITE_ERRORS as exc:
                why = str(exc) or "out of time"
                log.warning("Could not record the last circuit states: %s", why)
            except Exception:
                log.exception("Could not record the last circuit states")
            await keeper.stop()
            # Keep a moment of the grace for closing the database and the clients.
            lost = await recorder.stop(max(left() - CLOSING_S, 0.1))
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # sends the spans still batched
            await proxy.resilience.aclose()
            await snapshots.aclose()
            await db.close()
            if lost:
                log.warning(
                    "Recorded %d request(s); could not write %d history row(s); shut down",
                    recorder.written,
                    lost,
                )
            else:
                log.info("Recorded %d request(s); shut down cleanly", recorder.written)


def create_app(settings: Settings, *, tracer_provider: Any = None) -> ProviderRouterApp:
    """Build the application. Nothing is opened until the ASGI lifespan starts.

    ``tracer_provider``: an OpenTelemetry ``TracerProvider`` to make spans with (an application
    that embeds provider-router and has its own); without it, tracing follows the settings and
    the ``OTEL_*`` environment (:mod:`router.gateway.tracing`)."""
    return ProviderRouterApp(settings, tracer_provider=tracer_provider)
