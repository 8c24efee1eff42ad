"""The management commands through ``router.cli.main`` with a real database file (server down)."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from router.cli.main import main
from router.cli.tomlwriter import dumps
from router.mock.upstream import MockOptions, MockUpstream
from router.settings import Settings
from tests.helpers import TEST_SECRET_KEY, backend_settings, make_settings, query, serve_asgi

SECRET = "sk-cli-secret-abcdef123456"


class Cli:
    """``cli("provider", "list")`` -> (exit code, stdout, stderr), on this test's database;
    ``cli.db`` is that database's settings (for ``query``)."""

    def __init__(self, db: Settings, capsys: pytest.CaptureFixture[str]) -> None:
        self.db = db
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--database", self.db.database_url])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Cli]:
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "sqlite":
        yield Cli(make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'cli.db'}"), capsys)
        return
    monkeypatch.setenv("PROVIDER_ROUTER_SECRET_KEY", TEST_SECRET_KEY)
    yield Cli(backend_settings(request, tmp_path), capsys)


def add_openai(cli: Cli, provider_id: str = "main", base: str = "http://127.0.0.1:9/v1") -> None:
    code, _, err = cli("provider", "add", "--id", provider_id, "--name", provider_id, "--type",
                       "openai", "--set", f"baseURL={base}", "--set", f"apiKey={SECRET}",
                       "--set", "timeout=1500", "--model", "gpt-test")  # fmt: skip
    assert code == 0, err


def without_provider_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear the variables `migrate` reads, so only what a test sets is seen."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                 "OLLAMA_HOST", "OLLAMA_BASE_URL", "LM_STUDIO_BASE_URL", "DEFAULT_PROVIDER",
                 "LM_STUDIO_DEFAULT_MODEL", "OPENAI_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_provider_add_list_show_edit(cli: Cli, tmp_path: Path) -> None:
    add_openai(cli)
    assert query(cli.db, "SELECT key FROM provider_configs ORDER BY key") == [
        ("apiKey",), ("baseURL",), ("timeout",),
    ]  # fmt: skip
    code, out, _ = cli("provider", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "TYPE"] and "STATE" in header
    assert row.split()[:3] == ["main", "main", "openai"] and "enabled" in row

    code, out, _ = cli("provider", "show", "main")
    assert code == 0 and "****3456" in out and SECRET not in out and "gpt-test" in out
    code, out, _ = cli("provider", "show", "main", "--json")
    assert orjson.loads(out)["config"]["timeout"] == 1500

    code, out, _ = cli("provider", "edit", "main", "--priority", "7", "--unset", "timeout")
    assert code == 0
    assert query(cli.db, "SELECT priority FROM providers") == [(7,)]
    assert ("timeout",) not in query(cli.db, "SELECT key FROM provider_configs")
    code, out, _ = cli("provider", "list", "--json")
    assert [p["priority"] for p in orjson.loads(out)["data"]] == [7]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("provider", "add", "--name", "x", "--type", "nope"), "Unknown provider type"),
        (("provider", "add", "--name", "x", "--type", "openai"), "baseURL"),
        (("provider", "add", "--name", "x"), "both --name and --type"),
        (("provider", "show", "ghost"), "No provider"),
        (("provider", "edit", "ghost", "--priority", "1"), "No provider"),
        (("provider", "edit", "ghost"), "nothing to change"),
        (("provider", "add", "--name", "x", "--type", "openai", "--set", "baseURL"), "KEY=VALUE"),
        (("model", "link", "ghost", "m"), "No provider"),
        (("stats", "--since", "yesterday"), "--since"),
    ],
)
def test_failures_are_one_sentence_and_exit_1(cli: Cli, args: tuple[str, ...], words: str) -> None:
    code, out, err = cli(*args)
    assert code == 1
    assert out == ""
    assert err.startswith("provider-router: ") and words in err
    assert len(err.strip().splitlines()) == 1


def test_add_without_flags_outside_a_terminal_says_what_to_give(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = cli("provider", "add")
    assert code == 1 and "--name and --type" in err


def test_add_asks_in_a_terminal(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["openai", "Asked", "http://127.0.0.1:9/v1", "5", "m1, m2"])
    secrets = iter([SECRET])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(secrets))
    code, out, err = cli("provider", "add")
    assert code == 0, err
    assert SECRET not in out
    assert query(cli.db, "SELECT id, priority FROM providers") == [("asked", 5)]
    assert query(cli.db, "SELECT model_id FROM provider_models ORDER BY 1") == [
        ("m1",),
        ("m2",),
    ]


def test_enable_disable_remove_restore(cli: Cli, tmp_path: Path) -> None:
    add_openai(cli)
    assert cli("provider", "disable", "main")[0] == 0
    assert query(cli.db, "SELECT enabled FROM providers") == [(0,)]
    assert cli("provider", "enable", "main")[0] == 0
    assert query(cli.db, "SELECT enabled FROM providers") == [(1,)]

    query(
        cli.db,
        "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status, status_code,"
        " latency_ms) VALUES ('r1', 1, '/v1/chat/completions', 'gpt-test', 'main', 'success',"
        " 200, 12.5)",
    )
    code, out, _ = cli("provider", "remove", "main")
    assert code == 0 and "Archived" in out
    assert query(cli.db, "SELECT archived_at IS NOT NULL, enabled FROM providers") == [(1, 0)]
    code, out, _ = cli("provider", "list")
    assert "main" not in out
    code, out, _ = cli("provider", "list", "--archived")
    assert "archived" in out
    assert cli("provider", "restore", "main")[0] == 0
    assert query(cli.db, "SELECT archived_at, enabled FROM providers") == [(None, 1)]

    add_openai(cli, "spare")
    code, out, _ = cli("provider", "remove", "spare", "--json")
    assert orjson.loads(out) == {"id": "spare", "deleted": True, "archived": False}

    code, out, _ = cli("requests", "--limit", "5")
    assert "r1" in out and "gpt-test" in out
    code, out, _ = cli("stats", "--by", "model", "--json")
    [row] = orjson.loads(out)["data"]
    assert row["model"] == "gpt-test" and row["requests"] == 1 and row["p50_latency_ms"] == 12.5
    code, out, _ = cli("stats", "--since", "1h")
    assert code == 0 and out.splitlines()[0].startswith("PROVIDER")


def test_model_commands(cli: Cli, tmp_path: Path) -> None:
    add_openai(cli)
    assert cli("model", "add", "m2", "--name", "Two", "--capability", "chat")[0] == 0
    assert cli("model", "link", "main", "m2", "--upstream-model", "up-m2",
               "--input-cost", "0.5")[0] == 0  # fmt: skip
    code, out, _ = cli("model", "default", "main", "m2")
    assert code == 0
    links = "SELECT model_id, is_default, upstream_model FROM provider_models ORDER BY 1"
    assert query(cli.db, links) == [("gpt-test", 0, None), ("m2", 1, "up-m2")]
    code, out, _ = cli("model", "list")
    assert "m2" in out and "Two" in out
    assert cli("model", "unlink", "main", "m2")[0] == 0
    code, out, _ = cli("model", "remove", "m2")
    assert code == 0 and "Deleted" in out
    assert query(cli.db, "SELECT id FROM models") == [("gpt-test",)]
    code, out, _ = cli("provider", "models", "main", "--json")
    assert [m["model_id"] for m in orjson.loads(out)["data"]] == ["gpt-test"]


async def test_provider_test_and_remote_models_against_a_fake_upstream(cli: Cli) -> None:
    # The CLI runs its own event loop, as it does from a shell: run it in a thread.
    upstream = MockUpstream(MockOptions())
    async with serve_asgi(upstream.app()) as url:
        await asyncio.to_thread(add_openai, cli, "main", f"{url}/v1")
        await asyncio.to_thread(add_openai, cli, "dead", "http://127.0.0.1:9/v1")
        code, out, _ = await asyncio.to_thread(cli, "provider", "test", "main")
        assert code == 0 and "main: ok" in out
        code, out, _ = await asyncio.to_thread(cli, "provider", "test", "--all", "--json")
        results = {r["id"]: r["ok"] for r in orjson.loads(out)["data"]}
        assert code == 1 and results == {"main": True, "dead": False}
        code, out, _ = await asyncio.to_thread(cli, "provider", "models", "main", "--remote")
        assert code == 0 and out.strip()
    assert (await asyncio.to_thread(cli, "provider", "test"))[0] == 1


def test_provider_types_lists_the_builtins(cli: Cli) -> None:
    code, out, _ = cli("provider", "types", "--json")
    assert code == 0
    types = {t["type"]: [k["name"] for k in t["config_keys"]] for t in orjson.loads(out)["data"]}
    assert {"openai", "anthropic", "gemini", "ollama", "lm-studio"} <= set(types)
    for name in ("openai", "anthropic", "gemini", "ollama", "lm-studio"):
        assert {"proxy", "caBundle", "clientCert", "http2"} <= set(types[name]), name


def test_migrate_from_an_env_file_is_idempotent_and_never_prints_keys(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_provider_environment(monkeypatch)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-environment-0001")
    env = tmp_path / ".env"
    env.write_text(
        "# legacy\n"
        f"export OPENAI_API_KEY='{SECRET}'\n"
        "GOOGLE_API_KEY=AIza-google-key-99999\n"
        "OLLAMA_HOST=localhost:11434\n"
        "LM_STUDIO_DEFAULT_MODEL=qwen-7b\n"
        "DEFAULT_PROVIDER=ollama\n"
    )
    code, out, _ = cli("migrate", "--env-file", str(env), "--dry-run")
    assert code == 0 and out.count("would create") == 5
    assert SECRET not in out and "sk-ant-from" not in out and "AIza-google" not in out
    assert query(cli.db, "SELECT count(*) FROM providers") == [(0,)]
    assert not list(tmp_path.glob("*.bak"))

    code, out, _ = cli("migrate", "--env-file", str(env))
    assert code == 0 and "Created 5 provider(s)." in out and SECRET not in out
    if not cli.db.database_is_postgres:
        assert len(list(tmp_path.glob("cli.db.*.before-env-migrate.bak"))) == 1
    assert query(cli.db, "SELECT id, type, priority FROM providers ORDER BY id") == [
        ("anthropic", "anthropic", 0), ("gemini", "gemini", 0), ("lm-studio", "lm-studio", 0),
        ("ollama", "ollama", 10), ("openai", "openai", 0),
    ]  # fmt: skip
    assert query(cli.db, "SELECT provider_id, model_id FROM provider_models") == [
        ("lm-studio", "qwen-7b")
    ]
    config = dict(query(cli.db, "SELECT key, value FROM provider_configs"
                                  " WHERE provider_id = 'ollama'"))  # fmt: skip
    assert orjson.loads(config["baseURL"]) == "http://localhost:11434"

    code, out, _ = cli("migrate", "--env-file", str(env))
    assert code == 0 and "Nothing to create." in out
    assert query(cli.db, "SELECT count(*) FROM providers") == [(5,)]


def test_export_import_round_trip(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_openai(cli)
    assert cli("model", "add", "m2", "--capability", "chat")[0] == 0
    assert cli("model", "link", "main", "m2", "--output-cost", "2.5")[0] == 0
    code, masked, _ = cli("export")
    assert code == 0 and SECRET not in masked and "apiKey" not in masked
    code, full, _ = cli("export", "--include-secrets")
    assert SECRET in full
    data = tomllib.loads(full)
    assert [p["id"] for p in data["providers"]] == ["main"]
    assert data["models"] == [{"id": "gpt-test"}, {"id": "m2", "capabilities": ["chat"]}]

    other = tmp_path / "other"
    other.mkdir()
    path = tmp_path / "providers.toml"
    path.write_text(full)
    target = f"sqlite:///{other / 'b.db'}"
    assert main(["import", str(path), "--dry-run", "--database", target]) == 0
    conn = sqlite3.connect(other / "b.db")
    assert conn.execute("SELECT * FROM providers").fetchall() == []
    conn.close()
    assert main(["import", str(path), "--database", target]) == 0
    capsys.readouterr()
    assert main(["export", "--include-secrets", "--database", target]) == 0
    # The copy exports exactly what the original did; a second import changes nothing.
    assert tomllib.loads(capsys.readouterr().out) == data
    assert main(["import", str(path), "--database", target, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"changes": [], "dry_run": False}


def test_import_reports_and_applies_changes(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_openai(cli)
    path = tmp_path / "in.toml"
    path.write_text(
        '[[providers]]\nid = "main"\nname = "main"\ntype = "openai"\npriority = 3\n'
        'config = { baseURL = "http://127.0.0.1:9/v1" }\nmodels = ["gpt-test", "new-one"]\n'
    )
    code, out, _ = cli("import", str(path), "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        "would update provider main: priority", "would link new-one to main",
    ]  # fmt: skip
    assert query(cli.db, "SELECT priority FROM providers") == [(0,)]
    code, out, _ = cli("import", str(path))
    assert query(cli.db, "SELECT priority FROM providers") == [(3,)]
    # The secret, left out of the file, is kept.
    assert ("apiKey",) in query(cli.db, "SELECT key FROM provider_configs")
    code, out, _ = cli("import", str(path))
    assert out.strip() == "Nothing to change."
    path.write_text("not = [valid")
    code, _, err = cli("import", str(path))
    assert code == 1 and "not valid TOML" in err


def test_backup_copies_the_database(cli: Cli, tmp_path: Path) -> None:
    add_openai(cli)
    target = tmp_path / "copy.db"
    code, out, err = cli("backup", str(target))
    if cli.db.database_is_postgres:
        assert code == 1 and "pg_dump" in err and not target.exists()
        return
    assert code == 0 and "Backed up" in out
    # Like the key files: the copy holds the history and the encrypted credentials.
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    conn = sqlite3.connect(target)
    assert conn.execute("SELECT id FROM providers").fetchall() == [("main",)]
    conn.close()
    code, _, err = cli("backup", str(target))
    assert code == 1 and "already exists" in err


def test_usage_errors_exit_2(cli: Cli) -> None:
    with pytest.raises(SystemExit) as caught:
        cli("provider", "frobnicate")
    assert caught.value.code == 2


def test_the_installed_command_runs_as_a_process(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'smoke.db'}"
    command = [sys.executable, "-m", "router"]
    added = subprocess.run(
        [*command, "provider", "add", "--name", "Smoke", "--type", "lm-studio", "--model", "m",
         "--database", database],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = subprocess.run(
        [*command, "provider", "list", "--json", "--database", database],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert [p["id"] for p in orjson.loads(listed.stdout)["data"]] == ["smoke"]


def test_a_bad_entry_stops_the_import_before_anything_is_written(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "in.toml"
    path.write_text(
        '[[models]]\nid = "fine-model"\n\n'
        '[[providers]]\nid = "good"\nname = "good"\ntype = "lm-studio"\n\n'
        '[[providers]]\nid = "bad"\nname = "bad"\ntype = "openai"\nconfig = {}\n'
    )
    code, out, err = cli("import", str(path))
    assert code == 1 and "baseURL" in err and out == ""
    assert query(cli.db, "SELECT count(*) FROM providers") == [(0,)]
    assert query(cli.db, "SELECT count(*) FROM models") == [(0,)]
    assert not list(tmp_path.glob("*.bak"))
    path.write_text(path.read_text().replace("config = {}", 'config = { baseURL = "http://x/v1" }'))
    code, out, _ = cli("import", str(path))
    assert code == 0
    if not cli.db.database_is_postgres:  # PostgreSQL's backups are the operator's (pg_dump)
        assert out.startswith("Backed up the database to ")
        assert len(list(tmp_path.glob("cli.db.*.before-import.bak"))) == 1
    assert query(cli.db, "SELECT id FROM providers ORDER BY id") == [
        ("bad",),
        ("good",),
    ]


@pytest.mark.parametrize("text", ["del\x7fchar", 'nul\x00 tab\t quote" back\\ \u2028 \U0001f600'])
def test_the_toml_writer_round_trips_any_text(text: str) -> None:
    written = dumps({"providers": [{"description": text, "config": {"k y": text}}]})
    assert tomllib.loads(written) == {"providers": [{"description": text, "config": {"k y": text}}]}


def test_migrate_backup_and_db_status_speak_json(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_provider_environment(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_DEFAULT_MODEL", "gpt-test")
    code, out, _ = cli("migrate", "--dry-run", "--json")
    planned = orjson.loads(out)
    assert code == 0 and SECRET not in out
    openai = {"id": "openai", "type": "openai", "models": ["gpt-test"]}
    assert planned == {"dry_run": True, "existing": [], "backup": None, "created": [openai]}
    code, out, _ = cli("migrate", "--json")
    done = orjson.loads(out)
    assert code == 0 and done["created"] == planned["created"]
    if cli.db.database_is_postgres:
        assert done["backup"] is None
    else:
        assert Path(done["backup"]).exists()
    code, out, _ = cli("migrate", "--json")
    assert orjson.loads(out)["existing"] == ["openai"] and orjson.loads(out)["created"] == []

    target = tmp_path / "copy.db"
    code, out, _ = cli("backup", str(target), "--json")
    if not cli.db.database_is_postgres:
        assert code == 0 and orjson.loads(out)["backup"] == str(target) and target.exists()

    code, out, _ = cli("db", "status", "--json")
    status = orjson.loads(out)
    assert code == 0 and status["pending"] == []
    assert [m["version"] for m in status["applied"]][:2] == [1, 2]


def test_an_unreachable_database_is_one_sentence_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    database = f"sqlite:///{blocker / 'router.db'}"
    for args in (["provider", "list"], ["keys", "list"], ["requests"]):
        assert main([*args, "--database", database]) == 1
        err = capsys.readouterr().err
        assert err.startswith("provider-router: ") and str(blocker) in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
