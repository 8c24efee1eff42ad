"""Running the proxy under uvicorn: one process, uvloop and httptools, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from router import redact
from router.app import create_app, prepare_database
from router.gateway.auth import check_exposure
from router.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(settings: Settings) -> None:
    """Migrate and seed the database, then serve until SIGINT or SIGTERM.

    On a signal, uvicorn stops accepting connections and lets in-flight requests finish; the
    lifespan then writes every queued history row before the process exits.
    """
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    redact.install(fmt=LOG_FORMAT)  # no credential in any log line, tracebacks included
    # httpx logs every upstream call at INFO: noise on the hot path, and URLs do not belong in
    # an operator's log by default.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.root.level))
    asyncio.run(prepare_database(settings))
    asyncio.run(check_exposure(settings))
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # uvicorn's own loggers propagate to the root logger and its scrubbing formatter.
        log_config=None,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    logging.getLogger("provider_router").info(
        "provider-router listening on http://%s:%d (database %s)",
        settings.host,
        settings.port,
        settings.database_label,
    )
    uvicorn.Server(config).run()
