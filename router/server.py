"""Running the proxy under uvicorn: one process, uvloop and httptools, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType

import uvicorn

from router import redact
from router.app import ProviderRouterApp, create_app, prepare_database
from router.gateway.auth import check_exposure
from router.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(settings: Settings) -> None:
    """Migrate and seed the database, then serve until SIGINT or SIGTERM.

    On a signal, uvicorn stops accepting connections and lets in-flight requests finish; the
    lifespan then writes the queued history rows. Both share ``server.shutdown_grace_ms``,
    counted from the signal: in-flight requests get at most half of it, and rows still unwritten
    when it is over are counted and logged, so a full disk cannot hold the process up.
    """
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    redact.install(fmt=LOG_FORMAT)  # no credential in any log line, tracebacks included
    # httpx logs every upstream call at INFO: noise on the hot path, and URLs do not belong in
    # an operator's log by default.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.root.level))
    asyncio.run(prepare_database(settings))
    asyncio.run(check_exposure(settings))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # uvicorn's own loggers propagate to the root logger and its scrubbing formatter.
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(settings.shutdown_grace_ms // 2000, 1),
        server_header=False,
    )
    logging.getLogger("provider_router").info(
        "provider-router listening on http://%s:%d (database %s)",
        settings.host,
        settings.port,
        settings.database_path,
    )
    GatewayServer(config, app).run()


class GatewayServer(uvicorn.Server):
    """uvicorn's server, noting when the stop signal came so the shutdown grace counts from it."""

    def __init__(self, config: uvicorn.Config, app: ProviderRouterApp) -> None:
        super().__init__(config)
        self.gateway = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.gateway.shutdown_started is None:
            self.gateway.shutdown_started = time.monotonic()
        super().handle_exit(sig, frame)
