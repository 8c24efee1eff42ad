"""The operator-facing CLI (issue 17): history with attribution, limits, restore, formatting,
help, durations, typed-value errors, interactive answers, and refusing a keyless provider."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.cli.main import build_parser, main
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import add_provider, app_client, make_settings, query, serve_asgi

SECRET = "sk-operator-secret-abcd9876"


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Any]:
    """``cli(...)`` -> (exit code, stdout, stderr) on the database the app of this test uses."""
    for name in ("PROVIDER_ROUTER_CONFIG", "PROVIDER_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    database = make_settings(tmp_path).database_url

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--database", database])
        out, err = capsys.readouterr()
        return code, out, err

    yield run


async def failed_and_served(tmp_path: Path) -> None:
    """Through the real app and three real fake upstreams: a request that 'dead' (503) and then
    'refusing' (which rejects its key) fail (502), and one that 'dead' fails and 'good'
    answers (a fallback)."""
    dead = MockUpstream(MockOptions(fail="status:503"))
    refusing = MockUpstream(MockOptions(api_key="sk-the-right-one"))
    async with (
        serve_asgi(dead.app()) as dead_url,
        serve_asgi(refusing.app()) as refusing_url,
        serve_asgi(MockUpstream().app()) as good_url,
        app_client(make_settings(tmp_path)) as (app, client),
    ):
        await add_provider(client, "dead", f"{dead_url}/v1", ["lonely", "shared"], priority=9)
        await add_provider(client, "refusing", f"{refusing_url}/v1", ["lonely"])
        await add_provider(client, "good", f"{good_url}/v1", ["shared"])
        body = {"messages": [{"role": "user", "content": "hi"}]}
        failed = await client.post("/v1/chat/completions", json={"model": "lonely", **body})
        served = await client.post("/v1/chat/completions", json={"model": "shared", **body})
        assert (failed.status_code, served.status_code) == (502, 200), failed.text
        assert app.services is not None
        await app.services.recorder.flush()


def test_failed_requests_count_for_the_last_provider_tried(
    cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(failed_and_served(tmp_path))
    code, out, _ = cli("requests", "--json")
    rows = {r["model"]: r for r in orjson.loads(out)["data"]}
    assert rows["lonely"]["provider_id"] == "refusing" and rows["lonely"]["status"] == "error"
    assert rows["shared"]["provider_id"] == "good"

    code, out, _ = cli("requests", "--provider", "refusing")
    assert code == 0 and len(out.splitlines()) == 2 and "lonely" in out
    code, out, _ = cli("requests", "--tried", "dead", "--json")
    assert {r["model"] for r in orjson.loads(out)["data"]} == {"lonely", "shared"}
    code, out, _ = cli("requests", "--provider", "dead", "--json")
    assert orjson.loads(out)["data"] == []  # it never was the last one tried

    code, out, _ = cli("stats", "--by", "provider", "--json")
    stats = {r["provider"]: r for r in orjson.loads(out)["data"]}
    assert (stats["refusing"]["requests"], stats["refusing"]["errors"]) == (1, 1)
    assert None not in stats  # no failure left unattributed

    request_id = rows["lonely"]["id"]
    code, out, _ = cli("requests", "show", request_id)
    assert code == 0
    lines = out.splitlines()
    assert any(line.split() == ["provider_id", "refusing"] for line in lines)
    attempts = [line.split()[:2] for line in lines if line[:2] in ("1 ", "2 ")]
    assert attempts == [["1", "dead"], ["2", "refusing"]], out
    assert "credential rejected" in out
    code, out, _ = cli("requests", "show", request_id, "--json")
    assert [a["provider_id"] for a in orjson.loads(out)["attempt_details"]] == ["dead", "refusing"]

    code, _, err = cli("requests", "show", "req_nope")
    assert code == 1 and "No request with id 'req_nope'" in err
    with pytest.raises(SystemExit) as exited:
        cli("requests", "shw", request_id)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "usage: provider-router requests" in err
    assert "expected 'show ID'" in err


def test_requests_filter_by_status_and_since(cli: Any, tmp_path: Path) -> None:
    asyncio.run(failed_and_served(tmp_path))
    code, out, _ = cli("requests", "--status", "error", "--since", "1h", "--json")
    assert code == 0 and [r["model"] for r in orjson.loads(out)["data"]] == ["lonely"]
    code, out, _ = cli("requests", "--status", "client_closed", "--json")
    assert code == 0 and orjson.loads(out)["data"] == []
    code, out, _ = cli("requests", "--status", "client_disconnected", "--json")
    assert code == 0  # the old name still filters, as client_closed
    code, _, err = cli("requests", "--since", "yesterday")
    assert code == 1 and "got 'yesterday'" in err


def test_provider_show_is_one_label_and_value_per_line(cli: Any) -> None:
    code, _, err = cli("provider", "add", "--id", "main", "--name", "main", "--type", "openai",
                       "--set", "baseURL=http://127.0.0.1:9/v1", "--set", f"apiKey={SECRET}",
                       "--model", "m")  # fmt: skip
    assert code == 0, err
    assert cli("provider", "limits", "main", "--rpm", "60", "--tpm", "9000")[0] == 0
    code, out, _ = cli("provider", "show", "main")
    assert code == 0
    head = out.split("\n\n")[0].splitlines()
    fields = {line.split("  ")[0]: line.split("  ", 1)[1].strip() for line in head}
    assert fields["status"] == "enabled" and fields["circuit"] == "closed"
    assert fields["limits"] == "rpm=60 tpm=9000"
    assert fields["config.apiKey"] == "****9876" and SECRET not in out
    assert fields["config.baseURL"] == "http://127.0.0.1:9/v1"
    assert not any(": " in line.split("  ")[0] or "{'" in line for line in head)  # no reprs
    widths = {len(line) - len(line[len(line.split("  ")[0]) :].lstrip()) for line in head}
    assert len(widths) == 1  # one column of values


def test_provider_limits_set_show_and_clear(cli: Any, tmp_path: Path) -> None:
    cli("provider", "add", "--id", "p", "--name", "p", "--type", "openai",
        "--set", "baseURL=http://127.0.0.1:9/v1")  # fmt: skip
    code, out, _ = cli("provider", "limits", "p")
    assert (code, out.strip()) == (0, "p: no limits")
    assert cli("provider", "limits", "p", "--rpm", "10", "--rpd", "100")[1].strip() == (
        "p: rpm=10 rpd=100"
    )
    assert cli("provider", "limits", "p", "--tpm", "500", "--rpd", "0")[1].strip() == (
        "p: rpm=10 tpm=500"
    )
    assert query(tmp_path / "router.db", "SELECT limits FROM providers") == [
        ('{"rpm":10,"tpm":500}',)
    ]
    code, out, _ = cli("provider", "limits", "p", "--clear", "--json")
    assert orjson.loads(out) == {"id": "p", "limits": None}
    code, _, err = cli("provider", "limits", "p", "--clear", "--rpm", "5")
    assert code == 1 and "either --clear" in err
    code, _, err = cli("provider", "limits", "p", "--rpm", "-5")
    assert code == 1 and "-5" in err
    code, _, err = cli("provider", "limits", "nope", "--rpm", "5")
    assert code == 1 and "nope" in err


def test_model_restore_brings_an_archived_model_back(cli: Any, tmp_path: Path) -> None:
    cli("model", "add", "gpt-x")
    db = tmp_path / "router.db"
    with sqlite3.connect(db) as conn:  # a model named by history is archived
        conn.execute(
            "INSERT INTO requests (id, created_at, endpoint, model, status, status_code,"
            " latency_ms) VALUES ('r', 1, '/v1/chat/completions', 'gpt-x', 'success', 200, 1)"
        )
    code, out, _ = cli("model", "remove", "gpt-x")
    assert code == 0 and "Archived" in out
    code, out, _ = cli("model", "restore", "gpt-x")
    assert (code, out.strip()) == (0, "Restored model 'gpt-x'.")
    assert query(db, "SELECT archived_at FROM models WHERE id = 'gpt-x'") == [(None,)]
    code, _, err = cli("model", "restore", "nope")
    assert code == 1 and "nope" in err


def test_provider_types_json_has_no_markers_and_every_accepted_key(cli: Any) -> None:
    code, out, _ = cli("provider", "types", "--json")
    assert code == 0
    types = {t["type"]: t for t in orjson.loads(out)["data"]}
    openai_keys = {k["name"]: k for k in types["openai"]["config_keys"]}
    assert not any("*" in name for t in types.values() for name in
                   (k["name"] for k in t["config_keys"]))  # fmt: skip
    assert openai_keys["baseURL"]["required"] is True and openai_keys["apiKey"]["sensitive"]
    router_keys = {"connectTimeout", "firstByteTimeout", "idleTimeout", "totalTimeout",
                   "healthCheck"}  # fmt: skip
    for kind in types.values():
        assert router_keys <= {k["name"] for k in kind["config_keys"]}, kind["type"]
    assert types["anthropic"]["needs_api_key"] and not types["lm-studio"]["needs_api_key"]
    code, out, _ = cli("provider", "types")
    assert "baseURL*" in out and "healthCheck" in out  # the marker is for people only


def test_config_errors_name_the_value_typed_and_every_known_key(cli: Any) -> None:
    add = ("provider", "add", "--name", "o", "--type", "openai", "--set",
           "baseURL=http://127.0.0.1:9/v1")  # fmt: skip
    code, _, err = cli(*add, "--set", "healthCheck=maybe")
    assert code == 1 and "must be true or false, got 'maybe'." in err
    code, _, err = cli(*add, "--set", "timeout=soon")
    assert code == 1 and "got 'soon'" in err
    code, _, err = cli(*add, "--set", "apiKey=123456789")  # a secret is never echoed
    assert code == 1 and "123456789" not in err and "sensitive" in err
    code, _, err = cli(*add, "--set", "bogus=1")
    assert code == 1
    for key in ("connectTimeout", "firstByteTimeout", "idleTimeout", "totalTimeout",
                "healthCheck"):  # fmt: skip
        assert key in err


def test_key_expiry_takes_a_duration_or_unix_ms(cli: Any) -> None:
    code, out, _ = cli("keys", "create", "--name", "a", "--expires-at", "30d", "--json")
    assert code == 0
    expires = orjson.loads(out)["expires_at"]
    assert abs(expires - (time.time() + 30 * 86400) * 1000) < 60_000
    code, out, _ = cli("keys", "create", "--name", "b", "--expires-at", "4102444800000", "--json")
    assert orjson.loads(out)["expires_at"] == 4102444800000
    code, _, err = cli("keys", "create", "--name", "c", "--expires-at", "soon")
    assert code == 1 and "--expires-at" in err and "got 'soon'" in err
    code, out, _ = cli("keys", "list")
    header = out.splitlines()[0].split()
    assert header[:4] == ["ID", "PREFIX", "STATE", "NAME"] and "EXPIRES" in header


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (("provider", "add", "--nmae", "x"), "usage: provider-router provider add"),
        (("requests", "--modle", "x"), "usage: provider-router requests"),
        (
            ("keys", "create", "--name", "x", "--rmp-limit", "5"),
            "usage: provider-router keys create",
        ),
        (("provider", "limits", "p", "--rmp", "5"), "usage: provider-router provider limits"),
    ],
)
def test_a_mistyped_flag_prints_the_usage_of_its_command(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], usage: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(usage) and "unrecognized arguments: " + args[-2] in err


def test_every_option_has_help_text() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "provider-router")
    assert missing == []


def test_a_type_that_needs_a_key_is_refused_without_one_or_added_disabled(
    cli: Any, tmp_path: Path
) -> None:
    code, _, err = cli("provider", "add", "--name", "claude", "--type", "anthropic")
    assert code == 1 and "needs an apiKey" in err
    code, _, err = cli("provider", "add", "--name", "oa", "--type", "openai",
                       "--set", "baseURL=https://api.openai.com/v1")  # fmt: skip
    assert code == 1 and "needs an apiKey" in err
    code, _, err = cli("provider", "add", "--name", "claude", "--type", "anthropic", "--disabled")
    assert code == 0 and "warning" in err and "disabled" in err
    code, _, _ = cli("provider", "add", "--name", "local", "--type", "openai",
                     "--set", "baseURL=http://127.0.0.1:8000/v1")  # fmt: skip
    assert code == 0  # a local OpenAI-compatible server takes no key
    assert query(tmp_path / "router.db", "SELECT id, enabled FROM providers ORDER BY id") == [
        ("claude", 0), ("local", 1),
    ]  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interactive_add_asks_again_for_a_bad_answer_and_keeps_the_rest(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [
        "nosuchtype", "openai",  # type: asked again
        "",  # name: the default
        "ftp://nowhere", "http://127.0.0.1:8000/v1",  # baseURL: asked again (apiKey: getpass)
        "high", "5",  # priority: asked again
        "m1, m2",  # models
    ]  # fmt: skip
    monkeypatch.setattr("sys.stdin", Terminal("\n".join(answers) + "\n"))
    monkeypatch.setattr(getpass, "getpass", lambda prompt: "")
    code, _, err = cli("provider", "add")
    assert code == 0, err
    assert "No provider type 'nosuchtype'" in err
    assert "must be an http:// or https:// URL, got 'ftp://nowhere'" in err
    assert "Expected a whole number, got 'high'" in err
    assert query(tmp_path / "router.db", "SELECT type, priority FROM providers") == [("openai", 5)]
    assert query(tmp_path / "router.db", "SELECT model_id FROM provider_models ORDER BY 1") == [
        ("m1",), ("m2",),
    ]  # fmt: skip


def test_interactive_add_of_a_keyless_anthropic_adds_it_disabled(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["anthropic", "claude", "", "", "", "", "0", ""]
    monkeypatch.setattr("sys.stdin", Terminal("\n".join(answers) + "\n"))
    monkeypatch.setattr(getpass, "getpass", lambda prompt: "")
    code, _, err = cli("provider", "add")
    assert code == 0, err
    assert "needs an apiKey; adding the provider disabled" in err
    assert query(tmp_path / "router.db", "SELECT type, enabled FROM providers") == [
        ("anthropic", 0)
    ]
