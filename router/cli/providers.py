"""``provider-router provider ...``: the provider commands, over the same store as the API."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from providers.base import Adapter, AdapterOptions
from providers.http import HTTP_CONFIG_KEYS
from providers.registry import adapter_types, get_adapter_class
from router.cli.output import (
    Column,
    Command,
    CommandFailed,
    Subcommands,
    add_command,
    parse_pairs,
    print_fields,
    print_json,
    print_table,
    run_with_db,
    stamp,
)
from router.gateway.health import probe_and_record
from router.settings import Settings
from router.store import configs, lifecycle, links, providers
from router.store.db import Database
from router.transport.limits import ResponseLimits


def provider_state(provider: dict[str, Any]) -> str:
    if provider["archived_at"] is not None:
        return "archived"
    if not provider.get("available", True):
        return "unavailable"
    if not provider["enabled"]:
        return "disabled"
    circuit = provider["state"].get("circuit") or {}
    if circuit.get("state") == "open":
        until = circuit.get("cooldown_until")
        return f"cooling down until {stamp(until)}" if until else "cooling down"
    if circuit.get("state") == "half-open":
        return "half-open (next request probes)"
    return "enabled"


PROVIDER_COLUMNS: list[Column] = [
    ("ID", lambda p: p["id"]),
    ("NAME", lambda p: p["name"]),
    ("TYPE", lambda p: p["type"]),
    ("PRIORITY", lambda p: p["priority"]),
    ("WEIGHT", lambda p: p["weight"]),
    ("STATE", provider_state),
    ("OK", lambda p: p["state"]["success_count"]),
    ("ERRORS", lambda p: p["state"]["error_count"]),
    ("LAST USED", lambda p: stamp(p["state"]["last_used_at"])),
]


def cmd_list(args: argparse.Namespace) -> int:
    async def work(db: Database, _: Settings) -> int:
        found = await providers.list_providers(
            db, type_name=args.type, archived=None if args.archived else False
        )
        if args.json:
            print_json({"data": found})
        else:
            print_table(found, PROVIDER_COLUMNS)
        return 0

    return run_with_db(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    async def work(db: Database, _: Settings) -> int:
        provider = await providers.get_provider(db, args.id)
        if args.json:
            print_json(provider)
            return 0
        provider["status"] = provider_state(provider)
        print_fields(
            provider,
            ("id", "name", "type", "status", "priority", "weight", "description", "limits",
             "config"),
        )  # fmt: skip
        for key, value in provider["state"].items():
            print(f"{key}: {value if value is not None else '-'}")
        if provider["models"]:
            print()
            print_table(provider["models"], LINK_COLUMNS)
        return 0

    return run_with_db(args, work)


LINK_COLUMNS: list[Column] = [
    ("MODEL", lambda m: m["model_id"]),
    ("DEFAULT", lambda m: m["is_default"]),
    ("UPSTREAM MODEL", lambda m: m["upstream_model"]),
    ("IN/1K", lambda m: m["input_cost_per_1k"]),
    ("OUT/1K", lambda m: m["output_cost_per_1k"]),
    ("CURRENCY", lambda m: m["currency"]),
]


def _ask(prompt: str, default: str | None = None, *, secret: bool = False) -> str:
    shown = f" [{default}]" if default else ""
    answer = getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}{shown}: ")
    return answer.strip() or (default or "")


def interactive_body() -> dict[str, Any]:
    """Ask for a provider in the terminal; secrets are read without echo."""
    types = sorted(adapter_types())
    type_name = _ask(f"Type ({', '.join(types)})", "openai")
    adapter_class = get_adapter_class(type_name)
    name = _ask("Name", type_name)
    config: dict[str, Any] = {}
    for key, spec in adapter_class.config_keys.items():
        if spec.kind is not str or key in HTTP_CONFIG_KEYS:  # proxy and TLS files: rarely set
            continue
        hint = " (required)" if spec.required else " (enter to skip)"
        value = _ask(f"{key}{hint}", spec.default, secret=spec.sensitive)
        if value:
            config[key] = value
    body: dict[str, Any] = {"name": name, "type": type_name, "config": config}
    priority = _ask("Priority (higher runs first)", "0")
    body["priority"] = int(priority) if priority.lstrip("-").isdigit() else 0
    models = _ask("Models to link (comma-separated, enter to skip)")
    body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    return body


def body_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name, "type": args.type}
    for key in ("id", "priority", "weight", "description"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.disabled:
        body["enabled"] = False
    body["config"] = parse_pairs(args.set, "--set")
    body["models"] = args.model or []
    return body


def cmd_add(args: argparse.Namespace) -> int:
    if args.name is None and args.type is None:
        if not sys.stdin.isatty():
            raise CommandFailed("give --name and --type (or run it in a terminal to be asked).")
        body = interactive_body()
    elif args.name is None or args.type is None:
        raise CommandFailed("give both --name and --type.")
    else:
        body = body_from_flags(args)
    models = body.pop("models")

    async def work(db: Database, _: Settings) -> int:
        provider = await providers.create_provider(db, body)
        for model in models:
            await links.link_model(db, provider["id"], {"model_id": model})
        provider = await providers.get_provider(db, provider["id"])
        if args.json:
            print_json(provider)
        else:
            print(f"Created provider {provider['id']!r} ({provider['type']}).")
        return 0

    return run_with_db(args, work)


def cmd_edit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    for key in ("name", "priority", "weight", "description"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.enabled is not None:
        body["enabled"] = args.enabled
    config = parse_pairs(args.set, "--set")
    config.update(dict.fromkeys(args.unset or ()))
    if config:
        body["config"] = config
    if not body:
        raise CommandFailed("nothing to change; see `provider-router provider edit --help`.")

    async def work(db: Database, _: Settings) -> int:
        provider = await providers.update_provider(db, args.id, body)
        print_json(provider) if args.json else print(f"Updated provider {args.id!r}.")
        return 0

    return run_with_db(args, work)


def simple(action: Callable[[Database, str], Any], done: str) -> Callable[..., int]:
    def command(args: argparse.Namespace) -> int:
        async def work(db: Database, _: Settings) -> int:
            result = await action(db, args.id)
            print_json(result) if args.json else print(done.format(id=args.id, result=result))
            return 0

        return run_with_db(args, work)

    return command


def _removed_text(result: dict[str, Any]) -> str:
    if result["deleted"]:
        return f"Deleted provider {result['id']!r}."
    return (
        f"Archived provider {result['id']!r}: it has history (bring it back with "
        "`provider-router provider restore`)."
    )


async def _adapter(db: Database, settings: Settings, provider_id: str) -> Adapter:
    provider = await providers.get_provider(db, provider_id)
    config = await configs.provider_config(db, provider_id)
    adapter_class = get_adapter_class(provider["type"])
    problems = adapter_class.validate_config(config)
    if problems:
        raise CommandFailed(" ".join(problems))
    options = AdapterOptions(
        timeout_ms=settings.upstream_timeout_ms,
        connect_timeout_ms=settings.upstream_connect_timeout_ms,
        max_connections=settings.upstream_max_connections,
        pool_timeout_ms=settings.upstream_pool_timeout_ms,
        response_limits=ResponseLimits.from_settings(settings),
    )
    return adapter_class(provider_id, config, options)


def cmd_test(args: argparse.Namespace) -> int:
    """Probe providers now, concurrently, and record each result as a health check."""
    if bool(args.ids) == args.all:
        raise CommandFailed("give provider ids or --all.")

    async def work(db: Database, settings: Settings) -> int:
        if args.all:
            ids = [p["id"] for p in await providers.list_providers(db, archived=False)]
        else:
            ids = args.ids
        targets = []
        try:
            for provider_id in ids:
                linked = (await providers.get_provider(db, provider_id))["models"]
                default = next(
                    (m for m in linked if m["is_default"]), linked[0] if linked else None
                )
                model = (default["upstream_model"] or default["model_id"]) if default else None
                targets.append((provider_id, await _adapter(db, settings, provider_id), model))
            checked = await probe_and_record(db, targets, settings.health_check_timeout_ms / 1000)
        finally:
            for _, adapter, _ in targets:
                await adapter.aclose()
        results = [found.as_dict() for found in checked]
        if args.json:
            print_json({"data": results})
        else:
            for r in results:
                state = "ok" if r["ok"] else f"FAILED ({r.get('error', r.get('status_code'))})"
                print(f"{r['id']}: {state} in {r['latency_ms']} ms")
        return 0 if all(r["ok"] for r in results) else 1

    return run_with_db(args, work)


def cmd_types(args: argparse.Namespace) -> int:
    rows = []
    for name, adapter_class in sorted(adapter_types().items()):
        keys = [f"{k}{'*' if s.required else ''}" for k, s in adapter_class.config_keys.items()]
        rows.append({"type": name, "class": adapter_class.__module__, "config_keys": keys})
    if args.json:
        print_json({"data": rows})
    else:
        print_table(
            rows,
            [("TYPE", lambda r: r["type"]), ("MODULE", lambda r: r["class"]),
             ("CONFIG KEYS (* required)", lambda r: r["config_keys"])],
        )  # fmt: skip
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    async def work(db: Database, settings: Settings) -> int:
        if args.remote:
            adapter = await _adapter(db, settings, args.id)
            try:
                names = sorted(await adapter.list_models())
            finally:
                await adapter.aclose()
            print_json({"data": names}) if args.json else print("\n".join(names))
            return 0
        linked = (await providers.get_provider(db, args.id))["models"]
        print_json({"data": linked}) if args.json else print_table(linked, LINK_COLUMNS)
        return 0

    return run_with_db(args, work)


def register(
    commands: Subcommands,
    with_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    provider = commands.add_parser("provider", help="list, add, change, test and remove providers")
    sub = provider.add_subparsers(dest="provider_command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, text: str, *, id_arg: bool = True) -> argparse.ArgumentParser:
        parser = add_command(sub, name, func, text, with_config)
        if id_arg:
            parser.add_argument("id", help="provider id")
        return parser

    listing = add("list", cmd_list, "list providers, highest priority first", id_arg=False)
    listing.add_argument("--type", help="only this provider type")
    listing.add_argument("--archived", action="store_true", help="include archived providers")
    add("show", cmd_show, "show one provider: masked config, state, linked models")

    adding = add("add", cmd_add, "add a provider (asks in a terminal when no flags)", id_arg=False)
    adding.add_argument("--id", help="id slug (default: from the name)")
    adding.add_argument("--name")
    adding.add_argument("--type", help="provider type (see `provider-router provider types`)")
    adding.add_argument("--priority", type=int)
    adding.add_argument("--weight", type=int)
    adding.add_argument("--description")
    adding.add_argument("--disabled", action="store_true", help="create it disabled")
    adding.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config key")
    adding.add_argument("--model", action="append", metavar="MODEL", help="link a model")

    editing = add("edit", cmd_edit, "change a provider's fields and config keys")
    editing.add_argument("--name")
    editing.add_argument("--priority", type=int)
    editing.add_argument("--weight", type=int)
    editing.add_argument("--description")
    editing.add_argument("--enable", dest="enabled", action="store_const", const=True)
    editing.add_argument("--disable", dest="enabled", action="store_const", const=False)
    editing.add_argument("--set", action="append", metavar="KEY=VALUE", help="set a config key")
    editing.add_argument("--unset", action="append", metavar="KEY", help="remove a config key")

    add("remove", _remove_command, "delete a provider (archived if it has history)")
    enable = simple(lambda db, i: lifecycle.set_enabled(db, i, True), "Enabled {id!r}.")
    disable = simple(lambda db, i: lifecycle.set_enabled(db, i, False), "Disabled {id!r}.")
    add("enable", enable, "enable a provider")
    add("disable", disable, "disable a provider")
    restore = simple(lifecycle.restore_provider, "Restored {id!r}.")
    add("restore", restore, "bring an archived provider back")
    testing = add(
        "test", cmd_test, "probe providers now (a real upstream call) and record it", id_arg=False
    )
    testing.add_argument("ids", nargs="*", metavar="ID", help="provider ids")
    testing.add_argument("--all", action="store_true", help="test every non-archived provider")
    add("types", cmd_types, "list the installed provider types", id_arg=False)
    models = add("models", cmd_models, "the provider's linked models")
    models.add_argument("--remote", action="store_true", help="ask the upstream for its list")


def _remove_command(args: argparse.Namespace) -> int:
    async def work(db: Database, _: Settings) -> int:
        result = await lifecycle.delete_provider(db, args.id)
        print_json(result) if args.json else print(_removed_text(result))
        return 0

    return run_with_db(args, work)
