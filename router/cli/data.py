"""``migrate`` (from environment variables), ``export``/``import`` (TOML) and ``backup``.

The export file has the shape of the config file's ``[[providers]]`` tables (plus ``[[models]]``),
so one file can seed a new installation or be imported into a running one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from providers.registry import get_adapter_class
from router.cli.output import (
    Command,
    CommandFailed,
    Subcommands,
    add_command,
    print_json,
    run_with_db,
)
from router.cli.tomlwriter import dumps
from router.errors import NotFound
from router.settings import Settings
from router.store import configs, links, migrations
from router.store.db import Database
from router.store.models import create_model, get_model, list_models
from router.store.providers import create_provider, get_provider, list_providers, update_provider

PROVIDER_KEYS = ("id", "name", "type", "enabled", "priority", "weight", "description", "limits")
LINK_KEYS = ("upstream_model", "input_cost_per_1k", "output_cost_per_1k", "currency")

# -- migrate -------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments, ``export`` and surrounding quotes are allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {exc.strerror}.") from None
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key.strip()] = value
    return found


def _url(value: str) -> str:
    return value if "://" in value else f"http://{value}"


def providers_from_env(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The providers a legacy environment describes, in the shape ``create_provider`` takes."""
    found: list[dict[str, Any]] = []

    def add(pid: str, name: str, type_name: str, config: dict[str, Any], model: str | None) -> None:
        found.append({"id": pid, "name": name, "type": type_name, "config": config,
                      "models": [model] if model else []})  # fmt: skip

    if env.get("OPENAI_API_KEY"):
        base = env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        config = {"baseURL": base, "apiKey": env["OPENAI_API_KEY"]}
        add("openai", "OpenAI", "openai", config, env.get("OPENAI_DEFAULT_MODEL"))
    if env.get("ANTHROPIC_API_KEY"):
        config = {"apiKey": env["ANTHROPIC_API_KEY"]}
        add("anthropic", "Anthropic", "anthropic", config, env.get("ANTHROPIC_DEFAULT_MODEL"))
    gemini_key = env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
    if gemini_key:
        add("gemini", "Gemini", "gemini", {"apiKey": gemini_key}, env.get("GEMINI_DEFAULT_MODEL"))
    ollama = env.get("OLLAMA_BASE_URL") or env.get("OLLAMA_HOST")
    if ollama:
        config = {"baseURL": _url(ollama)}
        add("ollama", "Ollama", "ollama", config, env.get("OLLAMA_DEFAULT_MODEL"))
    if env.get("LM_STUDIO_BASE_URL") or env.get("LM_STUDIO_DEFAULT_MODEL"):
        config = {"baseURL": _url(env.get("LM_STUDIO_BASE_URL") or "http://localhost:1234/v1")}
        add("lm-studio", "LM Studio", "lm-studio", config, env.get("LM_STUDIO_DEFAULT_MODEL"))
    default = env.get("DEFAULT_PROVIDER")
    for provider in found:
        if default and provider["id"] in (default, default.replace("_", "-")):
            provider["priority"] = 10  # the legacy default runs first; the rest fall back
    return found


def describe(provider: dict[str, Any]) -> str:
    """One line per provider; secrets shown masked, never in clear."""
    keys = get_adapter_class(provider["type"]).config_keys
    shown = {
        key: configs.mask(value) if key in keys and keys[key].sensitive else value
        for key, value in provider["config"].items()
    }
    parts = [f"provider {provider['id']} ({provider['type']})", f"config {shown}"]
    if provider.get("priority"):
        parts.append(f"priority {provider['priority']}")
    if provider["models"]:
        parts.append(f"models {', '.join(provider['models'])}")
    return ", ".join(parts)


def cmd_migrate(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.env_file:
        env.update(read_env_file(Path(args.env_file)))  # the file named on the command line wins
    wanted = providers_from_env(env)

    async def work(db: Database, settings: Settings) -> int:
        existing = {p["id"] for p in await list_providers(db)}
        new = [p for p in wanted if p["id"] not in existing]
        say = (lambda _: None) if args.json else print
        for provider in wanted:
            if provider["id"] in existing:
                say(f"exists: provider {provider['id']} (left as it is)")
        for provider in new:
            say(f"{'would create' if args.dry_run else 'create'}: {describe(provider)}")
        copy = None
        if not new:
            say("Nothing to create.")
        elif not args.dry_run:
            copy = backup_beside(settings, "env-migrate")
            if copy is not None:
                say(f"Backed up the database to {copy}.")
            for provider in new:
                body = {k: v for k, v in provider.items() if k != "models"}
                await create_provider(db, body)
                for model in provider["models"]:
                    await links.link_model(db, provider["id"], {"model_id": model})
            say(f"Created {len(new)} provider(s).")
        if args.json:  # ids and models only: never a config value
            print_json({
                "dry_run": args.dry_run,
                "existing": sorted(p["id"] for p in wanted if p["id"] in existing),
                "created": [{"id": p["id"], "type": p["type"], "models": p["models"]}
                            for p in new],
                "backup": str(copy) if copy else None,
            })  # fmt: skip
        return 0

    return run_with_db(args, work)


def backup_beside(settings: Settings, reason: str) -> Path | None:
    """A copy of the SQLite database next to it, taken before a bulk change (None on
    PostgreSQL, whose backups are the operator's: pg_dump or the server's own, see
    docs/postgresql.md)."""
    if settings.database_is_postgres:
        return None
    conn = migrations.connect(settings.database_path)
    try:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{settings.database_path.name}.{stamp}.before-{reason}.bak"
        return migrations.backup(conn, settings.database_path.with_name(name))
    finally:
        conn.close()


# -- export / import -----------------------------------------------------------------------------


async def export_catalog(db: Database, *, include_secrets: bool) -> dict[str, Any]:
    """The whole catalog as a TOML-ready dict; sensitive config values only when asked."""
    exported = []
    for listed in await list_providers(db):
        provider = await get_provider(db, listed["id"])
        entry = {key: provider[key] for key in PROVIDER_KEYS if provider[key] is not None}
        keys = get_adapter_class(provider["type"]).config_keys
        clear = await configs.provider_config(db, provider["id"])
        entry["config"] = {
            key: value
            for key, value in clear.items()
            if include_secrets or not (key in keys and keys[key].sensitive)
        }
        entry["models"] = [
            {"id": link["model_id"], "is_default": link["is_default"],
             **{k: link[k] for k in LINK_KEYS if link[k] is not None}}
            for link in provider["models"]
        ]  # fmt: skip
        if provider["archived_at"] is not None:
            entry["archived"] = True
        exported.append(entry)
    kept_models = [
        {k: m[k] for k in ("id", "name", "description", "capabilities") if m[k] is not None}
        for m in await list_models(db)
    ]
    return {"providers": exported, "models": kept_models}


def cmd_export(args: argparse.Namespace) -> int:
    async def work(db: Database, _: Settings) -> int:
        data = await export_catalog(db, include_secrets=args.include_secrets)
        sys.stdout.write(
            "# provider-router export. Import it with `provider-router import FILE`.\n"
            + ("" if args.include_secrets else "# Secrets are left out; add them before use.\n")
            + dumps(data)
        )
        return 0

    return run_with_db(args, work)


async def import_catalog(db: Database, data: Any, *, dry_run: bool) -> list[str]:
    """Create what is missing and update what differs; returns one line per change."""
    if not isinstance(data, dict):
        raise CommandFailed("the file must hold [[providers]] and [[models]] tables.")
    changes: list[str] = []
    verb = "would " if dry_run else ""
    for model in data.get("models", []):
        try:
            await get_model(db, model.get("id"))
        except NotFound:
            changes.append(f"{verb}create model {model.get('id')}")
            if not dry_run:
                await create_model(db, model)
    for entry in data.get("providers", []):
        entry = dict(entry)
        models = entry.pop("models", [])
        archived = entry.pop("archived", False)
        provider_id = entry.get("id") or ""
        try:
            current = await get_provider(db, provider_id)
        except NotFound:
            current = None
        if current is None:
            changes.append(f"{verb}create provider {provider_id or entry.get('name')}")
            if dry_run:
                # Refuse now what create_provider would refuse halfway through the import.
                configs.validate_config(str(entry.get("type")), entry.get("config", {}),
                                         partial=False)  # fmt: skip
                continue
            current = await create_provider(db, entry)
        else:
            update = _differences(current, entry, await configs.provider_config(db, provider_id))
            if update:
                changes.append(f"{verb}update provider {provider_id}: {', '.join(sorted(update))}")
                if not dry_run:
                    await update_provider(db, provider_id, update)
        linked = {link["model_id"] for link in current["models"]}
        for link in models:
            link = {"model_id": link} if isinstance(link, str) else dict(link)
            if "id" in link:
                link["model_id"] = link.pop("id")
            if link["model_id"] not in linked:
                changes.append(f"{verb}link {link['model_id']} to {current['id']}")
                if not dry_run:
                    await links.link_model(db, current["id"], link)
        if archived and current["archived_at"] is None:
            changes.append(f"note: provider {current['id']} was archived where it came from")
    return changes


def _differences(
    current: dict[str, Any], entry: dict[str, Any], clear: dict[str, Any]
) -> dict[str, Any]:
    update = {
        key: value
        for key, value in entry.items()
        if key in PROVIDER_KEYS and key not in ("id", "type") and current.get(key) != value
    }
    config = {k: v for k, v in entry.get("config", {}).items() if clear.get(k) != v}
    if config:
        update["config"] = config
    return update


def cmd_import(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise CommandFailed(f"cannot read {args.file}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise CommandFailed(f"{args.file} is not valid TOML: {exc}.") from None

    async def work(db: Database, settings: Settings) -> int:
        # A dry run first: a bad entry stops the import before anything is written.
        changes = await import_catalog(db, data, dry_run=True)
        if changes and not args.dry_run:
            copy = backup_beside(settings, "import")
            changes = await import_catalog(db, data, dry_run=False)
            if not args.json and copy is not None:
                print(f"Backed up the database to {copy}.")
        if args.json:
            print_json({"changes": changes, "dry_run": args.dry_run})
        else:
            print("\n".join(changes) if changes else "Nothing to change.")
        return 0

    return run_with_db(args, work)


# -- backup --------------------------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists():
        raise CommandFailed(f"{target} already exists; give a new file name.")

    async def work(db: Database, settings: Settings) -> int:
        if settings.database_is_postgres:
            raise CommandFailed(
                "`backup` copies a SQLite file; back a PostgreSQL database up with pg_dump "
                "(pg_dump --format=custom URL > file) or the server's own backups."
            )
        conn = migrations.connect(settings.database_path)
        try:
            migrations.backup(conn, target)
        finally:
            conn.close()
        if args.json:
            print_json({"database": str(settings.database_path), "backup": str(target)})
        else:
            print(f"Backed up {settings.database_path} to {target}.")
        return 0

    return run_with_db(args, work)


def register(
    commands: Subcommands,
    with_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    def add(name: str, func: Command, text: str, *, json_flag: bool = True) -> Any:
        return add_command(commands, name, func, text, with_config, json_flag=json_flag)

    migrate = add("migrate", cmd_migrate, "create providers from OPENAI_API_KEY and friends")
    migrate.add_argument("--dry-run", action="store_true", help="print what it would create")
    migrate.add_argument("--env-file", help="also read variables from this .env file")
    export = add(
        "export",
        cmd_export,
        "print every provider, config, model and link as TOML",
        json_flag=False,
    )
    export.add_argument("--include-secrets", action="store_true", help="include API keys")
    importing = add("import", cmd_import, "create or update providers and models from TOML")
    importing.add_argument("file", help="a TOML file written by `provider-router export`")
    importing.add_argument("--dry-run", action="store_true", help="print what it would change")
    backup = add("backup", cmd_backup, "copy the database with SQLite's online backup API")
    backup.add_argument("path", help="where to write the copy")
