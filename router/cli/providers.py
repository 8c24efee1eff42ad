"""``provider-router provider ...``: the provider commands, over the same store as the API."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from providers.base import ROUTER_CONFIG_KEYS, Adapter, AdapterOptions
from providers.http import HTTP_CONFIG_KEYS
from providers.registry import adapter_types, get_adapter_class
from router.cli.output import (
    Column,
    Command,
    CommandFailed,
    Subcommands,
    add_command,
    cell,
    parse_pairs,
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


def _circuit_text(circuit: dict[str, Any]) -> str:
    state = circuit.get("state") or "closed"
    until = circuit.get("cooldown_until")
    text = f"{state} until {stamp(until)}" if state == "open" and until else state
    changed = circuit.get("changed_at")
    return f"{text} (since {stamp(changed)})" if changed else text


def _limits_text(limits: dict[str, Any] | None) -> str | None:
    if not limits:
        return None
    return " ".join(f"{key}={limits[key]}" for key in ("rpm", "rpd", "tpm") if key in limits)


def show_lines(provider: dict[str, Any]) -> list[tuple[str, Any]]:
    """``provider show`` as (label, value) pairs: one value per line, no nested structures."""
    state = provider["state"]
    lines: list[tuple[str, Any]] = [
        ("id", provider["id"]),
        ("name", provider["name"]),
        ("type", provider["type"]),
        ("status", provider_state(provider)),
        ("priority", provider["priority"]),
        ("weight", provider["weight"]),
        ("description", provider["description"]),
        ("limits", _limits_text(provider["limits"])),
    ]
    lines += [(f"config.{key}", value) for key, value in sorted(provider["config"].items())]
    lines += [
        ("circuit", _circuit_text(state.get("circuit") or {})),
        ("successes", state["success_count"]),
        ("errors", state["error_count"]),
        ("last used", stamp(state["last_used_at"])),
        ("last error", state["last_error"]),
        ("last error at", stamp(state["last_error_at"])),
        ("last health check", stamp(state["last_health_check"])),
    ]
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    async def work(db: Database, _: Settings) -> int:
        provider = await providers.get_provider(db, args.id)
        if args.json:
            print_json(provider)
            return 0
        lines = show_lines(provider)
        width = max(len(label) for label, _ in lines)
        for label, value in lines:
            text = orjson.dumps(value).decode() if isinstance(value, dict | list) else cell(value)
            print(f"{label.ljust(width)}  {text}")
        if provider["models"]:
            print()
            print_table(provider["models"], LINK_COLUMNS)
        return 0

    return run_with_db(args, work)


def cmd_limits(args: argparse.Namespace) -> int:
    """Show or set a provider's rate limits (rpm, rpd, tpm); ``--clear`` removes them all."""
    given = {key: getattr(args, key) for key in ("rpm", "rpd", "tpm")}
    changes = {key: value for key, value in given.items() if value is not None}
    if args.clear and changes:
        raise CommandFailed("give either --clear or limits to set, not both.")

    async def work(db: Database, _: Settings) -> int:
        provider = await providers.get_provider(db, args.id)
        if args.clear or changes:
            merged = {} if args.clear else {**(provider["limits"] or {}), **changes}
            # 0 removes one limit, as "no limit" reads in the other commands.
            merged = {key: value for key, value in merged.items() if value}
            await providers.update_provider(db, args.id, {"limits": merged or None})
            provider = await providers.get_provider(db, args.id)
        if args.json:
            print_json({"id": args.id, "limits": provider["limits"]})
        else:
            print(f"{args.id}: {_limits_text(provider['limits']) or 'no limits'}")
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


T = TypeVar("T")


def _ask_until(
    prompt: str, check: Callable[[str], T], default: str | None = None, *, secret: bool = False
) -> T:
    """Ask until ``check`` accepts the answer; it raises CommandFailed with what is wrong, which
    is printed before asking again, so nothing typed before is lost."""
    while True:
        answer = _ask(prompt, default, secret=secret)
        try:
            return check(answer)
        except CommandFailed as exc:
            print(f"  {exc} Try again.", file=sys.stderr)


def _known_type(answer: str) -> type[Adapter]:
    types = adapter_types()
    if answer not in types:
        raise CommandFailed(f"No provider type {answer!r}; installed: {', '.join(sorted(types))}.")
    return types[answer]


def _integer(answer: str) -> int:
    try:
        return int(answer)
    except ValueError:
        raise CommandFailed(f"Expected a whole number, got {answer!r}.") from None


def interactive_body() -> dict[str, Any]:
    """Ask for a provider in the terminal, checking each answer as it is given (a bad one is
    asked again); secrets are read without echo."""
    types = sorted(adapter_types())
    adapter_class = _ask_until(f"Type ({', '.join(types)})", _known_type, "openai")
    type_name = adapter_class.type
    name = _ask_until("Name", lambda a: a or _raise("A name is needed."), type_name)
    config: dict[str, Any] = {}

    def config_value(key: str, required: bool) -> Callable[[str], str]:
        def check(answer: str) -> str:
            if not answer:
                if required:
                    raise CommandFailed(f"Type {type_name!r} needs {key!r}.")
                return answer
            problems = adapter_class.validate_config({key: answer}, partial=True)
            if problems:
                raise CommandFailed(" ".join(problems))
            return answer

        return check

    for key, spec in adapter_class.config_keys.items():
        if spec.kind is not str or key in HTTP_CONFIG_KEYS:  # proxy and TLS files: rarely set
            continue
        hint = " (required)" if spec.required else " (enter to skip)"
        check = config_value(key, spec.required)
        value = _ask_until(f"{key}{hint}", check, spec.default, secret=spec.sensitive)
        if value:
            config[key] = value
    body: dict[str, Any] = {"name": name, "type": type_name, "config": config}
    if adapter_class.needs_api_key(config) and not config.get("apiKey"):
        print(
            f"provider-router: warning: type {type_name!r} needs an apiKey; adding the provider "
            "disabled (set it with `provider edit ID --set apiKey=...`, then `provider enable`).",
            file=sys.stderr,
        )
        body["enabled"] = False
    body["priority"] = _ask_until("Priority (higher runs first)", _integer, "0")
    models = _ask("Models to link (comma-separated, enter to skip)")
    body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    return body


def _raise(message: str) -> str:
    raise CommandFailed(message)


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


def check_credential(body: dict[str, Any]) -> str | None:
    """Refuse an enabled provider whose upstream needs an apiKey it lacks; for a disabled one,
    return the warning to print."""
    adapter_class = adapter_types().get(body["type"])
    config = body.get("config") or {}
    if adapter_class is None or not adapter_class.needs_api_key(config) or config.get("apiKey"):
        return None
    if body.get("enabled", True):
        raise CommandFailed(
            f"Provider type {body['type']!r} needs an apiKey: add --set apiKey=... (or add it "
            "--disabled and set the key before enabling it)."
        )
    return (
        f"warning: provider type {body['type']!r} needs an apiKey; it stays disabled until "
        "you set one (`provider edit ID --set apiKey=...`) and enable it."
    )


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
    warning = check_credential(body)

    async def work(db: Database, _: Settings) -> int:
        provider = await providers.create_provider(db, body)
        for model in models:
            await links.link_model(db, provider["id"], {"model_id": model})
        provider = await providers.get_provider(db, provider["id"])
        if warning:
            print(f"provider-router: {warning}", file=sys.stderr)
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


def type_rows() -> list[dict[str, Any]]:
    """Each installed type with every config key it accepts, the router's own ones included."""
    rows = []
    for name, adapter_class in sorted(adapter_types().items()):
        keys = [
            {"name": key, "required": spec.required, "sensitive": spec.sensitive,
             "description": spec.description}
            for key, spec in {**adapter_class.config_keys, **ROUTER_CONFIG_KEYS}.items()
        ]  # fmt: skip
        rows.append(
            {"type": name, "module": adapter_class.__module__, "config_keys": keys,
             "needs_api_key": adapter_class.needs_api_key({})}
        )  # fmt: skip
    return rows


def cmd_types(args: argparse.Namespace) -> int:
    rows = type_rows()
    if args.json:
        print_json({"data": rows})
        return 0
    marked = [
        {**row, "keys": [k["name"] + ("*" if k["required"] else "") for k in row["config_keys"]]}
        for row in rows
    ]
    print_table(
        marked,
        [("TYPE", lambda r: r["type"]), ("MODULE", lambda r: r["module"]),
         ("CONFIG KEYS (* required)", lambda r: r["keys"])],
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
    limits = add("limits", cmd_limits, "show or set a provider's rate limits")
    limits.add_argument("--rpm", type=int, help="requests per minute (0: no limit)")
    limits.add_argument("--rpd", type=int, help="requests per day (0: no limit)")
    limits.add_argument("--tpm", type=int, help="tokens per minute (0: no limit)")
    limits.add_argument("--clear", action="store_true", help="remove every limit")

    adding = add("add", cmd_add, "add a provider (asks in a terminal when no flags)", id_arg=False)
    adding.add_argument("--id", help="id slug (default: from the name)")
    adding.add_argument("--name", help="unique display name")
    adding.add_argument("--type", help="provider type (see `provider-router provider types`)")
    adding.add_argument("--priority", type=int, help="higher runs first (default 0)")
    adding.add_argument("--weight", type=int, help="share within its priority tier (default 1)")
    adding.add_argument("--description", help="free text")
    adding.add_argument("--disabled", action="store_true", help="create it disabled")
    adding.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config key")
    adding.add_argument(
        "--model", action="append", metavar="MODEL", help="link a model (repeatable)"
    )

    editing = add("edit", cmd_edit, "change a provider's fields and config keys")
    editing.add_argument("--name", help="new display name")
    editing.add_argument("--priority", type=int, help="higher runs first")
    editing.add_argument("--weight", type=int, help="share within its priority tier")
    editing.add_argument("--description", help="free text")
    editing.add_argument(
        "--enable", dest="enabled", action="store_const", const=True, help="enable it"
    )
    editing.add_argument(
        "--disable", dest="enabled", action="store_const", const=False, help="disable it"
    )
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
