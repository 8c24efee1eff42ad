"""Running the proxy under uvicorn: one process, uvloop and httptools, graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket

import uvicorn

from router import redact
from router.app import create_app, prepare_database
from router.gateway.auth import check_exposure
from router.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Where the hard limit is "unlimited", the soft one is raised this far (macOS refuses more than
# OPEN_MAX for RLIM_INFINITY, Linux than fs.nr_open).
_NOFILE_CEILING = 1 << 20


def raise_open_files_limit() -> tuple[int, int, int]:
    """Raise the soft limit on open files (RLIMIT_NOFILE) as far as the hard limit allows.

    Every client connection and every upstream connection is a file descriptor; the common
    default of 1,024 is far below what one proxy process can serve. Returns ``(before, now,
    hard)``; nothing changes where the system refuses.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        for wanted in (target, 65536, 10240):  # OPEN_MAX and fs.nr_open may be lower
            if wanted <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                continue
            return soft, wanted, hard
    return soft, soft, hard


class CannotListen(Exception):
    """The address to serve on is taken or not ours to bind; the message is one sentence."""


def check_listen(host: str, port: int, what: str = "provider-router") -> None:
    """Bind and release ``host:port`` as uvicorn will, before anything else happens, so a
    taken port stops ``serve`` with one sentence and no file created."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CannotListen(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a socket in TIME_WAIT from the last run does not count as in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CannotListen(
                    f"Port {port} on {host} is already in use (another {what} running?); "
                    "stop it or choose another port with --port."
                ) from None
            raise CannotListen(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None


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
    before, now, hard = raise_open_files_limit()
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    raised = f"raised from {before}" if now != before else "unchanged"
    logging.getLogger("provider_router").info(
        "Open files limit (RLIMIT_NOFILE): %d (%s; hard limit %s)", now, raised, hard_text
    )
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
