"""Settings: one frozen object, built once from defaults, a TOML file, the environment and flags.

Later sources win: defaults < config file < environment < command-line flags. A bad value stops
start-up with :class:`SettingsError`, whose message names the key and where it came from.

Example::

    settings = load_settings(config_path="config.toml", overrides={"port": 9090})
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "sqlite:///./data/provider-router.db"
ENV_CONFIG = "PROVIDER_ROUTER_CONFIG"
ENV_DATABASE_URL = "PROVIDER_ROUTER_DATABASE_URL"
ENV_ADMIN_TOKEN = "PROVIDER_ROUTER_ADMIN_TOKEN"  # noqa: S105 - a variable name
# security: credentials at rest, client keys, exposure check
ENV_SECRET_KEY = "PROVIDER_ROUTER_SECRET_KEY"  # noqa: S105 - a variable name
ENV_REQUIRE_CLIENT_KEYS = "PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS"
ENV_ALLOW_OPEN_PROXY = "PROVIDER_ROUTER_ALLOW_OPEN_PROXY"
# observability (issue 15): the read-only token Prometheus scrapes /metrics with
ENV_METRICS_TOKEN = "PROVIDER_ROUTER_METRICS_TOKEN"  # noqa: S105 - a variable name
# scale-out (issue 18): limits and circuits shared by replicas through Redis
ENV_REDIS_URL = "PROVIDER_ROUTER_REDIS_URL"
REDIS_ON_FAILURE = ("local", "closed")


class SettingsError(Exception):
    """A setting has a bad value; the message names the key and its source."""


@dataclass(frozen=True)
class Settings:
    """Every setting of a running proxy. Build it with :func:`load_settings`."""

    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    database_url: str = DEFAULT_DATABASE_URL
    admin_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 50 * 1024 * 1024
    upstream_timeout_ms: int = 120_000
    upstream_connect_timeout_ms: int = 10_000
    upstream_max_connections: int = 256
    # issue 16: the proxy's own limits, and what an upstream's answer may hold
    upstream_pool_timeout_ms: int = 10_000
    upstream_max_header_bytes: int = 64 * 1024
    upstream_max_body_bytes: int = 32 * 1024 * 1024
    upstream_max_event_bytes: int = 1024 * 1024
    reload_interval_ms: int = 1000
    recorder_queue_size: int = 10_000
    recorder_batch_size: int = 500
    recorder_flush_interval_ms: int = 100
    # history that cannot fill the disk (issue 15/16)
    recorder_retry_ms: int = 30_000
    shutdown_grace_ms: int = 10_000
    history_retention_days: int = 30
    history_max_rows: int = 0
    history_prune_interval_ms: int = 600_000
    # resilience (issue 5): selection, breaker, timeouts, health checks
    max_attempts: int = 4
    connect_retries: int = 1
    retry_backoff_ms: int = 100
    breaker_failure_threshold: int = 5
    breaker_window_ms: int = 60_000
    breaker_cooldown_ms: int = 30_000
    breaker_max_cooldown_ms: int = 600_000
    breaker_rate_limit_cooldown_ms: int = 10_000
    upstream_first_byte_timeout_ms: int = 120_000
    upstream_idle_timeout_ms: int = 60_000
    upstream_total_timeout_ms: int = 600_000
    health_check_interval_ms: int = 30_000
    health_check_timeout_ms: int = 10_000
    # security: credentials at rest, client keys, input limits, body logging
    secret_key: str | None = field(default=None, repr=False)
    require_client_keys: bool = False
    allow_open_proxy: bool = False
    max_header_bytes: int = 32 * 1024
    max_messages: int = 10_000
    max_json_depth: int = 64
    log_bodies: bool = False
    log_body_max_bytes: int = 4096
    # the admin web UI (issue 14)
    ui_enabled: bool = True
    ui_session_ttl_ms: int = 8 * 3600 * 1000
    ui_sign_in_delay_ms: int = 1000
    # observability (issue 15): Prometheus, OpenTelemetry, log format
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    tracing_enabled: bool = False
    tracing_capture_content: bool = False
    log_format: str = "text"
    access_log: bool = True
    # clients and web pages (issue 16): slow clients, browsers, TLS
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 60_000
    max_client_connections: int = 1000
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    # scale-out (issue 18): shared limits and circuits; None keeps them per process
    redis_url: str | None = field(default=None, repr=False)
    redis_on_failure: str = "local"
    redis_timeout_ms: int = 500
    redis_prefix: str = "provider-router:"
    seed_providers: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    config_path: str | None = None
    # Where each value that is not a default came from: field name -> "file", "environment" or
    # "flag" (shown by the UI's settings page; a missing name means the default).
    sources: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    @property
    def database_path(self) -> Path:
        """The SQLite file; a :class:`SettingsError` for a PostgreSQL URL (check
        :attr:`database_is_postgres` first)."""
        return database_path_from_url(self.database_url)

    @property
    def database_is_postgres(self) -> bool:
        return is_postgres_url(self.database_url)

    @property
    def database_label(self) -> str:
        """The database as logs and the CLI name it: the file, or the URL without its password."""
        if self.database_is_postgres:
            return display_url(self.database_url)
        return str(self.database_path)

    @property
    def state_dir(self) -> Path:
        """Where the generated secret-key and admin-token files live: beside the SQLite file, or
        ``./data`` with PostgreSQL (replicas should share PROVIDER_ROUTER_SECRET_KEY and
        PROVIDER_ROUTER_ADMIN_TOKEN instead)."""
        if self.database_is_postgres:
            return Path("data")
        return self.database_path.parent


# (section, key) in the TOML file -> (Settings field, type, minimum)
_FILE_KEYS: dict[tuple[str, str], tuple[str, type, int | None]] = {
    ("server", "host"): ("host", str, None),
    ("server", "port"): ("port", int, 1),
    ("server", "log_level"): ("log_level", str, None),
    ("database", "url"): ("database_url", str, None),
    ("auth", "admin_token"): ("admin_token", str, None),
    ("limits", "max_body_bytes"): ("max_body_bytes", int, 1),
    ("upstream", "timeout_ms"): ("upstream_timeout_ms", int, 1),
    ("upstream", "connect_timeout_ms"): ("upstream_connect_timeout_ms", int, 1),
    ("upstream", "max_connections"): ("upstream_max_connections", int, 1),
    ("upstream", "pool_timeout_ms"): ("upstream_pool_timeout_ms", int, 1),
    ("upstream", "max_header_bytes"): ("upstream_max_header_bytes", int, 1024),
    ("upstream", "max_body_bytes"): ("upstream_max_body_bytes", int, 1024),
    ("upstream", "max_event_bytes"): ("upstream_max_event_bytes", int, 1024),
    ("routing", "reload_interval_ms"): ("reload_interval_ms", int, 50),
    ("recorder", "queue_size"): ("recorder_queue_size", int, 1),
    ("recorder", "batch_size"): ("recorder_batch_size", int, 1),
    ("recorder", "flush_interval_ms"): ("recorder_flush_interval_ms", int, 1),
    ("recorder", "retry_ms"): ("recorder_retry_ms", int, 0),
    ("server", "shutdown_grace_ms"): ("shutdown_grace_ms", int, 0),
    ("history", "retention_days"): ("history_retention_days", int, 0),
    ("history", "max_rows"): ("history_max_rows", int, 0),
    ("history", "prune_interval_ms"): ("history_prune_interval_ms", int, 1000),
    # resilience (issue 5)
    ("routing", "max_attempts"): ("max_attempts", int, 1),
    ("routing", "connect_retries"): ("connect_retries", int, 0),
    ("routing", "retry_backoff_ms"): ("retry_backoff_ms", int, 0),
    ("breaker", "failure_threshold"): ("breaker_failure_threshold", int, 1),
    ("breaker", "window_ms"): ("breaker_window_ms", int, 1),
    ("breaker", "cooldown_ms"): ("breaker_cooldown_ms", int, 1),
    ("breaker", "max_cooldown_ms"): ("breaker_max_cooldown_ms", int, 1),
    ("breaker", "rate_limit_cooldown_ms"): ("breaker_rate_limit_cooldown_ms", int, 1),
    ("upstream", "first_byte_timeout_ms"): ("upstream_first_byte_timeout_ms", int, 1),
    ("upstream", "idle_timeout_ms"): ("upstream_idle_timeout_ms", int, 1),
    ("upstream", "total_timeout_ms"): ("upstream_total_timeout_ms", int, 1),
    ("health", "interval_ms"): ("health_check_interval_ms", int, 0),
    ("health", "timeout_ms"): ("health_check_timeout_ms", int, 1),
    # security
    ("auth", "secret_key"): ("secret_key", str, None),
    ("auth", "require_client_keys"): ("require_client_keys", bool, None),
    ("limits", "max_header_bytes"): ("max_header_bytes", int, 1024),
    ("limits", "max_messages"): ("max_messages", int, 1),
    ("limits", "max_json_depth"): ("max_json_depth", int, 2),
    ("logging", "log_bodies"): ("log_bodies", bool, None),
    ("logging", "body_max_bytes"): ("log_body_max_bytes", int, 0),
    # the admin web UI
    ("ui", "enabled"): ("ui_enabled", bool, None),
    ("ui", "session_ttl_ms"): ("ui_session_ttl_ms", int, 60_000),
    ("ui", "sign_in_delay_ms"): ("ui_sign_in_delay_ms", int, 0),
    # observability
    ("metrics", "enabled"): ("metrics_enabled", bool, None),
    ("metrics", "token"): ("metrics_token", str, None),
    ("tracing", "enabled"): ("tracing_enabled", bool, None),
    ("tracing", "capture_content"): ("tracing_capture_content", bool, None),
    ("logging", "format"): ("log_format", str, None),
    ("logging", "access_log"): ("access_log", bool, None),
    # clients and web pages
    ("server", "header_timeout_ms"): ("header_timeout_ms", int, 100),
    ("server", "body_timeout_ms"): ("body_timeout_ms", int, 100),
    ("server", "max_connections"): ("max_client_connections", int, 1),
    ("server", "cors_origins"): ("cors_origins", tuple, None),
    ("server", "allowed_hosts"): ("allowed_hosts", tuple, None),
    ("server", "tls_cert"): ("tls_cert", str, None),
    ("server", "tls_key"): ("tls_key", str, None),
    # scale-out
    ("redis", "url"): ("redis_url", str, None),
    ("redis", "on_failure"): ("redis_on_failure", str, None),
    ("redis", "timeout_ms"): ("redis_timeout_ms", int, 1),
    ("redis", "prefix"): ("redis_prefix", str, None),
}


def file_settings() -> list[tuple[str, str]]:
    """Every setting of the config file as ``("section.key", Settings field name)``."""
    return [(f"{section}.{key}", spec[0]) for (section, key), spec in _FILE_KEYS.items()]


_ORIGIN = re.compile(r"https?://[^/?#\s]+")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def check_postgres_url(url: str) -> str:
    """``url`` if it names a PostgreSQL database (``postgresql://user:pw@host:port/dbname``)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise SettingsError(
            f"Database URL {display_url(url)!r} has a port that is not a number."
        ) from None
    if not parts.hostname and "host=" not in parts.query:
        raise SettingsError(
            f"Database URL {display_url(url)!r} names no host; give one such as "
            "'postgresql://router:secret@127.0.0.1:5432/router'."
        )
    if not parts.path.strip("/"):
        raise SettingsError(
            f"Database URL {display_url(url)!r} names no database; end it with '/dbname'."
        )
    return url


def display_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def database_path_from_url(url: str) -> Path:
    """Turn a SQLAlchemy-style SQLite URL into a path.

    ``sqlite:///data/x.db`` is relative to the working directory, ``sqlite:////srv/x.db`` is
    absolute.
    """
    prefix = "sqlite:///"
    if is_postgres_url(url):
        raise SettingsError(
            f"Database URL {display_url(url)!r} names a PostgreSQL database, which has no file."
        )
    if not url.startswith(prefix):
        scheme = url.split(":", 1)[0] if ":" in url else url
        raise SettingsError(
            f"Database URL {display_url(url)!r} is not supported: give a SQLite URL such as "
            "'sqlite:///./data/provider-router.db' or a PostgreSQL one such as "
            f"'postgresql://router:secret@127.0.0.1:5432/router' (got scheme {scheme!r})."
        )
    rest = url[len(prefix) :]
    if not rest or rest == ":memory:":
        raise SettingsError(
            f"Database URL {url!r} names no file; give a path such as "
            "'sqlite:///./data/provider-router.db'."
        )
    return Path(rest)


def _check(name: str, value: Any, kind: type, minimum: int | None, source: str) -> Any:
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise SettingsError(
                f"Setting {name!r} in {source} must be an array of non-empty strings, "
                f"got {value!r}."
            )
        if name.endswith("cors_origins"):
            for origin in value:
                if origin != "*" and not _ORIGIN.fullmatch(origin):
                    raise SettingsError(
                        f"Setting {name!r} in {source} must list origins such as "
                        f"'https://app.example' (scheme, host and port only) or '*', "
                        f"got {origin!r}."
                    )
        return tuple(value)
    if kind is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise SettingsError(
                f"Setting {name!r} in {source} must be true or false, got {value!r}."
            )
        return value
    if kind is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise SettingsError(
                    f"Setting {name!r} in {source} must be an integer, got {value!r}."
                ) from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingsError(f"Setting {name!r} in {source} must be an integer, got {value!r}.")
        if minimum is not None and value < minimum:
            raise SettingsError(
                f"Setting {name!r} in {source} must be at least {minimum}, got {value}."
            )
        if name.endswith("port") and value > 65535:
            raise SettingsError(f"Setting {name!r} in {source} must be at most 65535, got {value}.")
        return value
    if not isinstance(value, str):
        raise SettingsError(f"Setting {name!r} in {source} must be a string, got {value!r}.")
    if name == "logging.format" and value not in LOG_FORMATS:
        raise SettingsError(
            f"Setting {name!r} in {source} must be one of {', '.join(LOG_FORMATS)}, got {value!r}."
        )
    if name.endswith("log_level") and value.lower() not in _LOG_LEVELS:
        raise SettingsError(
            f"Setting {name!r} in {source} must be one of {', '.join(_LOG_LEVELS)}, got {value!r}."
        )
    return value


def _read_file(path: str) -> tuple[dict[str, Any], tuple[Mapping[str, Any], ...]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"Config file {path!r} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"Config file {path!r} is not valid TOML: {exc}.") from None
    except OSError as exc:
        raise SettingsError(f"Config file {path!r} cannot be read: {exc.strerror}.") from None
    values: dict[str, Any] = {}
    providers = data.pop("providers", [])
    if not isinstance(providers, list) or not all(isinstance(p, dict) for p in providers):
        raise SettingsError(f"Setting 'providers' in {path} must be an array of tables.")
    for section, table in data.items():
        if not isinstance(table, dict):
            raise SettingsError(f"Unknown setting {section!r} in {path}.")
        for key, value in table.items():
            spec = _FILE_KEYS.get((section, key))
            if spec is None:
                raise SettingsError(f"Unknown setting '{section}.{key}' in {path}.")
            field_name, kind, minimum = spec
            values[field_name] = _check(f"{section}.{key}", value, kind, minimum, path)
    return values, tuple(providers)


def load_settings(
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: defaults, then the config file, the environment, then ``overrides``.

    ``config_path`` falls back to ``PROVIDER_ROUTER_CONFIG``. ``overrides`` maps Settings field
    names to values (the CLI flags); ``None`` values are ignored.
    """
    env = os.environ if environ is None else environ
    config_path = config_path or env.get(ENV_CONFIG) or None
    values: dict[str, Any] = {}
    seed: tuple[Mapping[str, Any], ...] = ()
    if config_path:
        values, seed = _read_file(config_path)
    # Where each value came from, for error messages; ``origin`` says the kind, for the UI.
    source = dict.fromkeys(values, config_path or "")
    origin = dict.fromkeys(values, "file")
    for variable, name in (
        (ENV_DATABASE_URL, "database_url"),
        (ENV_ADMIN_TOKEN, "admin_token"),
        (ENV_SECRET_KEY, "secret_key"),
        (ENV_REQUIRE_CLIENT_KEYS, "require_client_keys"),
        (ENV_ALLOW_OPEN_PROXY, "allow_open_proxy"),
        (ENV_METRICS_TOKEN, "metrics_token"),
        (ENV_REDIS_URL, "redis_url"),
    ):
        if env.get(variable):
            values[name], source[name] = env[variable], f"the environment ({variable})"
            origin[name] = "environment"
    for name, setting in (
        ("require_client_keys", "auth.require_client_keys"),
        ("allow_open_proxy", ENV_ALLOW_OPEN_PROXY),
    ):
        if name in values:
            values[name] = _check(setting, values[name], bool, None, source[name])
    known = {f.name for f in fields(Settings)}
    for name, value in (overrides or {}).items():
        if name not in known or name == "sources":
            raise SettingsError(f"Unknown setting {name!r}.")
        if value is not None:
            values[name], source[name] = value, "the command line"
            origin[name] = "flag"
    if "port" in values:
        values["port"] = _check("server.port", values["port"], int, 1, source["port"])
    settings = Settings(
        **values,
        seed_providers=seed,
        config_path=config_path,
        sources=MappingProxyType(origin),
    )
    try:
        if settings.database_is_postgres:
            check_postgres_url(settings.database_url)
        else:
            settings.database_path  # noqa: B018 - validates the URL now, not at first use
    except SettingsError as exc:
        where = source.get("database_url", "the defaults")
        raise SettingsError(f"Setting 'database.url' in {where}: {exc}") from None
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError(
            "Settings 'server.tls_cert' and 'server.tls_key' go together: set both (a PEM "
            "certificate chain and its private key) to serve HTTPS, or neither."
        )
    _check_redis(settings, source)
    if settings.admin_token is not None and len(settings.admin_token) < 8:
        raise SettingsError(
            f"Setting 'auth.admin_token' in {source['admin_token']} must be at least 8 characters"
            " long; generate one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )
    if settings.metrics_token is not None and len(settings.metrics_token) < 8:
        raise SettingsError(
            f"Setting 'metrics.token' in {source['metrics_token']} must be at least 8 characters"
            " long; generate one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )
    return settings


def _check_redis(settings: Settings, source: Mapping[str, str]) -> None:
    url = settings.redis_url
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        raise SettingsError(
            f"Setting 'redis.url' in {source.get('redis_url')} must be a redis://, rediss:// "
            f"or unix:// URL such as 'redis://127.0.0.1:6379/0' (got scheme {scheme!r})."
        )
    if settings.redis_on_failure not in REDIS_ON_FAILURE:
        raise SettingsError(
            f"Setting 'redis.on_failure' in {source.get('redis_on_failure', 'the defaults')} "
            f"must be one of {', '.join(REDIS_ON_FAILURE)}, got {settings.redis_on_failure!r}."
        )
    if not settings.redis_prefix:
        raise SettingsError(
            f"Setting 'redis.prefix' in {source.get('redis_prefix')} must not be empty."
        )


def file_keys() -> dict[tuple[str, str], str]:
    """Every ``(section, key)`` the config file accepts, with the Settings field it sets."""
    return {place: spec[0] for place, spec in _FILE_KEYS.items()}
