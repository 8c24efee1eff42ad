"""Running the proxy under uvicorn: one process, uvloop and httptools, graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import gc
import importlib.util
import logging
import resource
import socket
import ssl
import time
from types import FrameType

import uvicorn

from router import logs
from router.app import ProviderRouterApp, create_app, prepare_database
from router.connections import ClientLimits, ClientServer, configure
from router.gateway.auth import check_exposure, is_loopback
from router.settings import Settings, SettingsError

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


def tune_collector() -> None:
    """Make the garbage collector cheaper for a long-running server.

    What is loaded by now (modules, settings) lives as long as the process, yet every full
    collection walks it again: ``gc.freeze`` moves it out of the collector's way. And every
    request allocates a few hundred objects, so CPython's default of a young collection every
    700 allocations runs several times per request; every 7,000 is still frequent enough to
    keep cycles short-lived.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(7000, middle, old)


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


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def check_tracing(settings: Settings) -> None:
    """Refuse to start with ``tracing.enabled`` when the ``otel`` extra is missing, before
    anything listens (the lifespan would fail later, with less to say)."""
    if settings.tracing_enabled and not installed("opentelemetry.sdk"):
        raise SettingsError(
            "Setting 'tracing.enabled' is true, but the OpenTelemetry SDK is not installed; "
            "install it with: pip install 'provider-router[otel]'."
        )


def serve(settings: Settings) -> None:
    """Migrate and seed the database, then serve until SIGINT or SIGTERM.

    On a signal, uvicorn stops accepting connections and lets in-flight requests finish; the
    lifespan then writes the queued history rows. Both share ``server.shutdown_grace_ms``,
    counted from the signal: in-flight requests get at most half of it, and rows still unwritten
    when it is over are counted and logged, so a full disk cannot hold the process up.
    """
    # Text or JSON lines, every one scrubbed of credentials (tracebacks included).
    logs.configure(settings.log_level, settings.log_format)
    check_tracing(settings)
    tune_collector()
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
    check_tls(settings)
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
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
    )
    configure(config, ClientLimits.from_settings(settings))
    logger = logging.getLogger("provider_router")
    for warning in (cleartext_warning(settings), host_warning(settings), fd_warning(settings)):
        if warning:
            logger.warning(warning)
    logger.info(
        "provider-router listening on %s://%s:%d (database %s)",
        "https" if settings.tls_cert else "http",
        settings.host,
        settings.port,
        settings.database_label,
    )
    GatewayServer(config, app).run()


class GatewayServer(ClientServer):
    """uvicorn's server, noting when the stop signal came so the shutdown grace counts from it."""

    def __init__(self, config: uvicorn.Config, app: ProviderRouterApp) -> None:
        super().__init__(config)
        self.gateway = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.gateway.shutdown_started is None:
            self.gateway.shutdown_started = time.monotonic()
        super().handle_exit(sig, frame)


def cleartext_warning(settings: Settings) -> str | None:
    """What to tell an operator who serves plain HTTP on an address other machines can reach."""
    if settings.tls_cert or is_loopback(settings.host):
        return None
    return (
        f"Serving plain HTTP on {settings.host}: the admin token, client keys, prompts and "
        "answers cross the network in clear. Set server.tls_cert and server.tls_key to serve "
        "HTTPS, or put a TLS-terminating proxy in front and listen on 127.0.0.1."
    )


def fd_warning(settings: Settings, soft_limit: int | None = None) -> str | None:
    """Whether the open-file limit is reached before ``server.max_connections``: then clients
    would meet accept() failures, not the cap's clear 503. Read as the server starts."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # Upstream connections, the database and the log need descriptors too.
    needed = settings.max_client_connections + 128
    if soft_limit == resource.RLIM_INFINITY or soft_limit >= needed:
        return None
    return (
        f"The open-file limit ({soft_limit}) is below server.max_connections "
        f"({settings.max_client_connections}) plus room for upstream connections: raise it "
        f"(ulimit -n {needed}) or lower server.max_connections."
    )


def host_warning(settings: Settings) -> str | None:
    """An open gateway (behind an authenticating proxy) off loopback answers only loopback Host
    names until client keys exist (router/gateway/origins.py); say so before clients get 403."""
    if not settings.allow_open_proxy or settings.allowed_hosts or is_loopback(settings.host):
        return None
    return (
        "While no client key exists, only loopback Host names are accepted (against DNS "
        "rebinding); list the names clients reach this gateway by in server.allowed_hosts "
        '("*" for any), or they get 403 host_not_allowed.'
    )


def check_tls(settings: Settings) -> None:
    """Stop start-up with a sentence when the TLS certificate or key cannot be used."""
    if not settings.tls_cert:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key
        )
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"Settings 'server.tls_cert' ({settings.tls_cert}) and 'server.tls_key' "
            f"({settings.tls_key}) cannot be used: {reason}."
        ) from None
