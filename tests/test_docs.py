"""The docs cover what ships: a setting, command or endpoint that is not documented fails here."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

from starlette.routing import Route

from router import settings as settings_module
from router.app import create_app
from router.cli.main import build_parser
from router.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = ROOT / "config.example.toml"


def test_every_file_setting_is_in_the_example_config_and_the_readme() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    # The commented-out admin token is still shown, as a comment.
    example.setdefault("auth", {})["admin_token"] = "shown as a comment"
    example["auth"]["secret_key"] = "shown as a comment"
    example.setdefault("metrics", {})["token"] = "shown as a comment"
    example.setdefault("redis", {})["url"] = "shown as a comment"
    for section, key in settings_module.file_keys():
        assert key in example.get(section, {}), f"{section}.{key} missing from {EXAMPLE.name}"
        assert f"`{section}.{key}`" in README, f"{section}.{key} missing from README.md"
    assert "# admin_token =" in EXAMPLE.read_text()
    assert "# secret_key =" in EXAMPLE.read_text()
    assert "# token =" in EXAMPLE.read_text()
    assert '# url = "redis://' in EXAMPLE.read_text()


def test_the_example_config_loads_and_its_defaults_are_the_real_ones() -> None:
    loaded = settings_module.load_settings(str(EXAMPLE), environ={})
    defaults = Settings()
    for field_name in settings_module.file_keys().values():
        if field_name not in ("admin_token", "secret_key", "metrics_token", "redis_url"):
            assert getattr(loaded, field_name) == getattr(defaults, field_name), field_name
    assert loaded.seed_providers


def test_every_environment_variable_is_in_the_readme() -> None:
    names = [v for k, v in vars(settings_module).items() if k.startswith("ENV_")]
    assert len(names) == 8
    for name in names:
        assert name in README


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix}{name}")
                found.extend(_commands(sub, f"{prefix}{name} "))
    return found


def test_every_cli_command_is_in_the_readme() -> None:
    commands = _commands(build_parser())
    assert "db status" in commands
    for command in commands:
        assert f"provider-router {command}" in README, command


def test_every_endpoint_is_in_the_readme() -> None:
    app = create_app(Settings())
    routes = [r for r in app.starlette.routes if isinstance(r, Route)]
    paths = {re.sub(r"\{(\w+)(:\w+)?\}", "{id}", r.path) for r in routes}
    paths |= {"/v1/chat/completions", "/v1/embeddings"}
    paths |= {"/v1/messages", "/v1/messages/count_tokens"}
    documented = re.sub(r"\{\w+\}", "{id}", README)
    for path in sorted(paths):
        assert path in documented, path


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    command = next(line for line in README.splitlines() if ".venv/bin/pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci
    assert ".venv/bin/lint-imports" in command
