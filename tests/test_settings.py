"""load_settings: defaults < TOML file < environment < overrides, and every bad value refused.

The environment is always passed explicitly (``environ={...}``), never read from the process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from router.settings import (
    DEFAULT_DATABASE_URL,
    ENV_ADMIN_TOKEN,
    ENV_CONFIG,
    ENV_DATABASE_URL,
    Settings,
    SettingsError,
    database_path_from_url,
    load_settings,
)

FULL_CONFIG = """
[server]
host = "0.0.0.0"
port = 9191
log_level = "debug"

[database]
url = "sqlite:///file/router.db"

[auth]
admin_token = "file-token-0123456789"

[limits]
max_body_bytes = 1024

[upstream]
timeout_ms = 5000
connect_timeout_ms = 700
max_connections = 8

[routing]
reload_interval_ms = 250

[recorder]
queue_size = 100
batch_size = 10
flush_interval_ms = 5
"""


def write_config(tmp_path: Path, text: str, name: str = "config.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def refused(config_text: str, tmp_path: Path) -> tuple[str, str]:
    """Load a config that must be refused; return (message, the file's path)."""
    path = write_config(tmp_path, config_text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ={})
    return str(caught.value), path


# -- defaults and sources ------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.log_level == "info"
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.database_path == Path("data/provider-router.db")
    assert settings.admin_token is None
    assert settings.max_body_bytes == 50 * 1024 * 1024
    assert settings.upstream_timeout_ms == 120_000
    assert settings.upstream_connect_timeout_ms == 10_000
    assert settings.upstream_max_connections == 256
    assert settings.reload_interval_ms == 1000
    assert settings.recorder_queue_size == 10_000
    assert settings.recorder_batch_size == 500
    assert settings.recorder_flush_interval_ms == 100
    assert settings.seed_providers == ()
    assert settings.config_path is None


def test_every_file_value_is_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, FULL_CONFIG)
    settings = load_settings(path, environ={})
    assert settings.host == "0.0.0.0"
    assert settings.port == 9191
    assert settings.log_level == "debug"
    assert settings.database_url == "sqlite:///file/router.db"
    assert settings.database_path == Path("file/router.db")
    assert settings.admin_token == "file-token-0123456789"
    assert settings.max_body_bytes == 1024
    assert settings.upstream_timeout_ms == 5000
    assert settings.upstream_connect_timeout_ms == 700
    assert settings.upstream_max_connections == 8
    assert settings.reload_interval_ms == 250
    assert settings.recorder_queue_size == 100
    assert settings.recorder_batch_size == 10
    assert settings.recorder_flush_interval_ms == 5
    assert settings.config_path == path


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\nport = 9000\n")
    settings = load_settings(path, environ={})
    assert settings.port == 9000
    assert settings.host == "127.0.0.1"
    assert settings.database_url == DEFAULT_DATABASE_URL


def test_environment_values_are_read() -> None:
    settings = load_settings(
        environ={
            ENV_DATABASE_URL: "sqlite:////tmp/env.db",
            ENV_ADMIN_TOKEN: "env-token-0123456789",
        }
    )
    assert settings.database_url == "sqlite:////tmp/env.db"
    assert settings.database_path == Path("/tmp/env.db")  # noqa: S108 - no file is made
    assert settings.admin_token == "env-token-0123456789"
    assert settings.config_path is None


def test_environment_names_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\nport = 7000\n")
    settings = load_settings(environ={ENV_CONFIG: path})
    assert settings.port == 7000
    assert settings.config_path == path


def test_an_explicit_config_path_wins_over_the_environment(tmp_path: Path) -> None:
    from_env = write_config(tmp_path, "[server]\nport = 7000\n", "env.toml")
    explicit = write_config(tmp_path, "[server]\nport = 7001\n", "explicit.toml")
    settings = load_settings(explicit, environ={ENV_CONFIG: from_env})
    assert settings.port == 7001
    assert settings.config_path == explicit


def test_empty_environment_values_are_ignored(tmp_path: Path) -> None:
    path = write_config(tmp_path, FULL_CONFIG)
    settings = load_settings(path, environ={ENV_DATABASE_URL: "", ENV_ADMIN_TOKEN: ""})
    assert settings.database_url == "sqlite:///file/router.db"
    assert settings.admin_token == "file-token-0123456789"


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, FULL_CONFIG)
    settings = load_settings(
        path,
        environ={
            ENV_DATABASE_URL: "sqlite:///env/router.db",
            ENV_ADMIN_TOKEN: "env-token-0123456789",
        },
    )
    assert settings.database_url == "sqlite:///env/router.db"
    assert settings.admin_token == "env-token-0123456789"
    assert settings.port == 9191  # not in the environment: the file's value stays


def test_overrides_win_over_environment_and_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, FULL_CONFIG)
    settings = load_settings(
        path,
        environ={ENV_DATABASE_URL: "sqlite:///env/router.db"},
        overrides={"database_url": "sqlite:///flag/router.db", "port": 6000, "host": "::1"},
    )
    assert settings.database_url == "sqlite:///flag/router.db"
    assert settings.port == 6000
    assert settings.host == "::1"
    assert settings.log_level == "debug"


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    path = write_config(tmp_path, FULL_CONFIG)
    settings = load_settings(
        path,
        environ={ENV_DATABASE_URL: "sqlite:///env/router.db"},
        overrides={"database_url": None, "port": None, "host": None},
    )
    assert settings.database_url == "sqlite:///env/router.db"
    assert settings.port == 9191
    assert settings.host == "0.0.0.0"


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError, match="Unknown setting 'prot'"):
        load_settings(environ={}, overrides={"prot": 1})


def test_a_port_override_is_checked() -> None:
    assert load_settings(environ={}, overrides={"port": "8181"}).port == 8181
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={}, overrides={"port": 0})
    assert "'server.port'" in str(caught.value)
    assert "the command line" in str(caught.value)
    with pytest.raises(SettingsError, match="at most 65535"):
        load_settings(environ={}, overrides={"port": 65536})


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


# -- bad values in the file ---------------------------------------------------------------------


def test_a_port_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    message, path = refused('[server]\nport = "abc"\n', tmp_path)
    assert "'server.port'" in message
    assert path in message
    assert "must be an integer" in message
    assert "'abc'" in message


def test_a_port_above_65535_is_refused(tmp_path: Path) -> None:
    message, path = refused("[server]\nport = 70000\n", tmp_path)
    assert "'server.port'" in message
    assert path in message
    assert "at most 65535" in message


def test_a_port_below_1_is_refused(tmp_path: Path) -> None:
    message, path = refused("[server]\nport = 0\n", tmp_path)
    assert "'server.port'" in message
    assert path in message
    assert "at least 1" in message


def test_a_boolean_is_not_an_integer(tmp_path: Path) -> None:
    message, path = refused("[upstream]\ntimeout_ms = true\n", tmp_path)
    assert "'upstream.timeout_ms'" in message
    assert path in message


def test_a_minimum_other_than_1_is_enforced(tmp_path: Path) -> None:
    message, path = refused("[routing]\nreload_interval_ms = 10\n", tmp_path)
    assert "'routing.reload_interval_ms'" in message
    assert "at least 50" in message
    assert path in message


def test_a_string_setting_given_a_number_is_refused(tmp_path: Path) -> None:
    message, path = refused("[server]\nhost = 127\n", tmp_path)
    assert "'server.host'" in message
    assert "must be a string" in message
    assert path in message


def test_an_unknown_key_is_refused(tmp_path: Path) -> None:
    message, path = refused("[server]\nprot = 8080\n", tmp_path)
    assert "'server.prot'" in message
    assert path in message


def test_an_unknown_section_is_refused(tmp_path: Path) -> None:
    message, path = refused('[sever]\nhost = "x"\n', tmp_path)
    assert "'sever.host'" in message
    assert path in message


def test_an_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    message, path = refused("port = 8080\n", tmp_path)
    assert "'port'" in message
    assert path in message


def test_a_bad_log_level_is_refused(tmp_path: Path) -> None:
    message, path = refused('[server]\nlog_level = "loud"\n', tmp_path)
    assert "'server.log_level'" in message
    assert path in message
    assert "'loud'" in message
    assert "debug" in message


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    message, path = refused("[server\nport: 8080\n", tmp_path)
    assert path in message
    assert "not valid TOML" in message


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(SettingsError) as caught:
        load_settings(str(path), environ={})
    assert str(path) in str(caught.value)


def test_a_directory_as_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(str(tmp_path), environ={})
    assert str(tmp_path) in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ={})
    assert path in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_a_missing_file_named_by_the_environment_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={ENV_CONFIG: path})
    assert path in str(caught.value)


def test_providers_must_be_an_array_of_tables(tmp_path: Path) -> None:
    message, path = refused('providers = ["a"]\n', tmp_path)
    assert "'providers'" in message
    assert path in message


def test_a_short_admin_token_is_refused(tmp_path: Path) -> None:
    message, _ = refused('[auth]\nadmin_token = "short"\n', tmp_path)
    assert "'auth.admin_token'" in message
    assert "at least 8 characters" in message
    with pytest.raises(SettingsError, match="at least 8 characters"):
        load_settings(environ={ENV_ADMIN_TOKEN: "1234567"})
    assert load_settings(environ={ENV_ADMIN_TOKEN: "12345678"}).admin_token == "12345678"


def test_a_short_admin_token_message_names_the_file(tmp_path: Path) -> None:
    message, path = refused('[auth]\nadmin_token = "short"\n', tmp_path)
    assert path in message


def test_an_unknown_database_scheme_is_refused(tmp_path: Path) -> None:
    message, _ = refused('[database]\nurl = "mysql://u@db/router"\n', tmp_path)
    assert "'mysql://u@db/router'" in message
    assert "'mysql'" in message
    assert "give a SQLite URL" in message and "or a PostgreSQL one" in message


def test_a_postgresql_url_without_a_database_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    message, _ = refused('[database]\nurl = "postgresql://u:hunter22@db/"\n', tmp_path)
    assert "'postgresql://u:***@db/'" in message and "names no database" in message
    assert "hunter22" not in message


def test_an_in_memory_database_is_refused(tmp_path: Path) -> None:
    message, _ = refused('[database]\nurl = "sqlite:///:memory:"\n', tmp_path)
    assert "sqlite:///:memory:" in message
    assert "names no file" in message


@pytest.mark.parametrize("url", ["postgresql://u@db/", "sqlite:///:memory:"])
def test_a_bad_database_url_message_names_key_and_file(tmp_path: Path, url: str) -> None:
    message, path = refused(f'[database]\nurl = "{url}"\n', tmp_path)
    assert "database.url" in message
    assert path in message


def test_a_bad_database_url_from_the_environment_is_refused() -> None:
    with pytest.raises(SettingsError, match="'mysql://db/x' is not supported"):
        load_settings(environ={ENV_DATABASE_URL: "mysql://db/x"})


# -- database URLs and seed providers -------------------------------------------------------------


def test_database_path_from_a_relative_url() -> None:
    path = database_path_from_url("sqlite:///data/x.db")
    assert path == Path("data/x.db")
    assert not path.is_absolute()


def test_database_path_from_an_absolute_url() -> None:
    path = database_path_from_url("sqlite:////tmp/x.db")
    assert path == Path("/tmp/x.db")  # noqa: S108 - no file is made
    assert path.is_absolute()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "file:x.db", "x.db", ""])
def test_database_path_from_urls_without_a_file(url: str) -> None:
    with pytest.raises(SettingsError):
        database_path_from_url(url)


def test_provider_tables_become_seed_providers(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[server]
port = 8081

[[providers]]
id = "one"
name = "One"
type = "openai"
config = { baseURL = "http://127.0.0.1:9000/v1" }
models = ["m1", { id = "m2", upstream_model = "up-2" }]

[[providers]]
name = "Two"
type = "lm-studio"
""",
    )
    settings = load_settings(path, environ={})
    assert settings.port == 8081
    assert [dict(p) for p in settings.seed_providers] == [
        {
            "id": "one",
            "name": "One",
            "type": "openai",
            "config": {"baseURL": "http://127.0.0.1:9000/v1"},
            "models": ["m1", {"id": "m2", "upstream_model": "up-2"}],
        },
        {"name": "Two", "type": "lm-studio"},
    ]
    assert isinstance(settings.seed_providers, tuple)
    # They are kept out of the repr (they may hold API keys).
    assert "seed_providers" not in repr(settings)


def test_each_value_remembers_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = 9000\nlog_level = "debug"\n[ui]\nsession_ttl_ms = 600000\n')
    settings = load_settings(
        str(config),
        environ={"PROVIDER_ROUTER_ADMIN_TOKEN": "env-admin-token-1"},
        overrides={"port": 9100, "host": None},
    )
    assert settings.sources == {
        "port": "flag",
        "log_level": "file",
        "ui_session_ttl_ms": "file",
        "admin_token": "environment",
    }
    assert (settings.port, settings.ui_session_ttl_ms) == (9100, 600000)
    assert "host" not in settings.sources  # the default
    with pytest.raises(SettingsError, match="Unknown setting 'sources'"):
        load_settings(None, environ={}, overrides={"sources": {}})


def test_observability_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[metrics]\nenabled = false\ntoken = "file-metrics-token"\n'
        "[tracing]\nenabled = true\ncapture_content = true\n"
        '[logging]\nformat = "json"\naccess_log = false\n'
    )
    loaded = load_settings(str(config), environ={})
    assert (loaded.metrics_enabled, loaded.metrics_token) == (False, "file-metrics-token")
    assert (loaded.tracing_enabled, loaded.tracing_capture_content) == (True, True)
    assert (loaded.log_format, loaded.access_log) == ("json", False)
    assert "file-metrics-token" not in repr(loaded)
    from_env = load_settings(
        str(config), environ={"PROVIDER_ROUTER_METRICS_TOKEN": "env-metrics-token"}
    )
    assert from_env.metrics_token == "env-metrics-token"
    assert from_env.sources["metrics_token"] == "environment"
    with pytest.raises(SettingsError, match=r"'metrics.token' in the environment.*at least 8"):
        load_settings(environ={"PROVIDER_ROUTER_METRICS_TOKEN": "short"})
    config.write_text("[metrics]\nenabled = 1\n")
    with pytest.raises(SettingsError, match=r"'metrics.enabled'.*true or false"):
        load_settings(str(config), environ={})
