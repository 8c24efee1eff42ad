"""``provider-router model ...``, ``requests`` and ``stats``: models, links and history."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from router.cli.output import (
    Column,
    Command,
    Subcommands,
    add_command,
    parse_since,
    print_fields,
    print_json,
    print_table,
    run_with_db,
    stamp,
)
from router.cli.providers import LINK_COLUMNS
from router.settings import Settings
from router.store import history, lifecycle, links, models, stats
from router.store.db import Database

MODEL_COLUMNS: list[Column] = [
    ("ID", lambda m: m["id"]),
    ("NAME", lambda m: m["name"]),
    ("PROVIDERS", lambda m: m["providers"]),
    ("CAPABILITIES", lambda m: m["capabilities"]),
    ("ARCHIVED", lambda m: stamp(m["archived_at"])),
]
REQUEST_COLUMNS: list[Column] = [
    ("TIME", lambda r: stamp(r["created_at"])),
    ("ID", lambda r: r["id"]),
    ("MODEL", lambda r: r["model"]),
    ("PROVIDER", lambda r: r["provider_id"]),
    ("STATUS", lambda r: r["status"]),
    ("CODE", lambda r: r["status_code"]),
    ("MS", lambda r: round(r["latency_ms"])),
    ("TOKENS", lambda r: r["total_tokens"]),
    ("TRIES", lambda r: r["attempts"]),
]


def _run(args: argparse.Namespace, work: Callable[[Database], Any], show: Callable[[Any], None]
         ) -> int:  # fmt: skip
    async def go(db: Database, _: Settings) -> int:
        result = await work(db)
        print_json(result) if args.json else show(result)
        return 0

    return run_with_db(args, go)


def cmd_list(args: argparse.Namespace) -> int:
    archived = None if args.archived else False
    return _run(
        args,
        lambda db: models.list_models(db, archived=archived),
        lambda found: print_table(found, MODEL_COLUMNS),
    )


def cmd_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"id": args.id}
    if args.name is not None:
        body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    if args.capability:
        body["capabilities"] = args.capability
    return _run(
        args,
        lambda db: models.create_model(db, body),
        lambda model: print(f"Created model {model['id']!r}."),
    )


def cmd_remove(args: argparse.Namespace) -> int:
    def show(result: dict[str, Any]) -> None:
        if result["deleted"]:
            print(f"Deleted model {result['id']!r} and its links.")
        else:
            print(f"Archived model {result['id']!r}: requests name it; its links stay.")

    return _run(args, lambda db: lifecycle.delete_model(db, args.id), show)


def cmd_link(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"model_id": args.model}
    for key, flag in (
        ("upstream_model", "upstream_model"),
        ("input_cost_per_1k", "input_cost"),
        ("output_cost_per_1k", "output_cost"),
        ("currency", "currency"),
    ):
        if getattr(args, flag) is not None:
            body[key] = getattr(args, flag)
    if args.default:
        body["is_default"] = True
    return _run(
        args,
        lambda db: links.link_model(db, args.provider, body),
        lambda link: print(f"Linked {link['model_id']!r} to {link['provider_id']!r}."),
    )


def cmd_restore(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda db: lifecycle.restore_model(db, args.id),
        lambda model: print(f"Restored model {model['id']!r}."),
    )


def cmd_unlink(args: argparse.Namespace) -> int:
    async def work(db: Database) -> dict[str, Any]:
        await links.unlink_model(db, args.provider, args.model)
        return {"provider_id": args.provider, "model_id": args.model, "deleted": True}

    return _run(args, work, lambda _: print(f"Unlinked {args.model!r} from {args.provider!r}."))


def cmd_default(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda db: links.set_default(db, args.provider, args.model),
        lambda found: print_table(found, LINK_COLUMNS),
    )


ATTEMPT_COLUMNS: list[Column] = [
    ("N", lambda a: a["n"]),
    ("PROVIDER", lambda a: a["provider_id"]),
    ("STARTED", lambda a: stamp(a["started_at"])),
    ("STATUS", lambda a: a["status"]),
    ("CODE", lambda a: a["status_code"]),
    ("MS", lambda a: round(a["latency_ms"])),
    ("ERROR", lambda a: a["error"]),
]
_REQUEST_FIELDS = (
    "id", "created_at", "endpoint", "model", "provider_id", "upstream_model", "stream", "status",
    "status_code", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "total_tokens",
    "cost", "currency", "client_key_id", "error",
)  # fmt: skip


def _show_request(found: dict[str, Any]) -> None:
    shown = {**found, "created_at": stamp(found["created_at"])}
    print_fields(shown, _REQUEST_FIELDS)
    trace = found.get("trace") or {}
    for provider_id, reason, until in trace.get("skipped") or ():
        print(
            f"skipped  {provider_id or '-'}: {reason}" + (f" until {stamp(until)}" if until else "")
        )
    print()
    if found["attempt_details"]:
        print_table(found["attempt_details"], ATTEMPT_COLUMNS)
    else:
        print("No attempts: the request never reached a provider.")


def cmd_requests(args: argparse.Namespace) -> int:
    action = args.action or []
    if action:
        if action[0] != "show" or len(action) != 2:
            args.parser.error(f"expected 'show ID' or no argument, got {' '.join(action)!r}")
        return _run(args, lambda db: history.get_request(db, action[1]), _show_request)
    params = {"limit": str(args.limit)}
    for key, value in (("model", args.model), ("provider_id", args.provider),
                       ("tried_provider_id", args.tried), ("status", args.status)):  # fmt: skip
        if value is not None:
            params[key] = value
    if args.since is not None:
        params["since"] = str(parse_since(args.since, int(time.time() * 1000)))
    return _run(
        args,
        lambda db: history.list_requests(db, params),
        lambda page: print_table(page["data"], REQUEST_COLUMNS),
    )


def cmd_stats(args: argparse.Namespace) -> int:
    params = {"group_by": args.by}
    if args.since is not None:
        params["since"] = str(parse_since(args.since, int(time.time() * 1000)))
    columns: list[Column] = [
        (args.by.upper(), lambda r: r[args.by]),
        ("REQUESTS", lambda r: r["requests"]),
        ("ERRORS", lambda r: r["errors"]),
        ("TOKENS", lambda r: r["total_tokens"]),
        ("COST", lambda r: r["cost"]),
        ("P50 MS", lambda r: round(r["p50_latency_ms"], 1)),
        ("P95 MS", lambda r: round(r["p95_latency_ms"], 1)),
    ]
    return _run(
        args,
        lambda db: stats.usage_stats(db, params),
        lambda result: print_table(result["data"], columns),
    )


def register(
    commands: Subcommands,
    with_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    model = commands.add_parser("model", help="list, add and remove models; link them")
    sub = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")

    def add(parent: Subcommands, name: str, func: Command, text: str) -> argparse.ArgumentParser:
        return add_command(parent, name, func, text, with_config)

    listing = add(sub, "list", cmd_list, "list models with their providers")
    listing.add_argument("--archived", action="store_true", help="include archived models")
    adding = add(sub, "add", cmd_add, "add a model")
    adding.add_argument("id", help="model id clients ask for")
    adding.add_argument("--name", help="display name (default: the id)")
    adding.add_argument("--description", help="free text shown in lists")
    adding.add_argument("--capability", action="append", help="e.g. chat, tools, embeddings")
    add(sub, "remove", cmd_remove, "delete a model (archived if requests name it)").add_argument(
        "id", help="the model's id"
    )
    add(sub, "restore", cmd_restore, "bring an archived model back").add_argument(
        "id", help="the model's id"
    )
    linking = add(sub, "link", cmd_link, "link a model to a provider (creates the model)")
    linking.add_argument("provider", help="provider id")
    linking.add_argument("model", help="model id clients ask for")
    linking.add_argument("--upstream-model", help="the name the upstream knows it by")
    linking.add_argument("--input-cost", type=float, help="cost per 1k prompt tokens")
    linking.add_argument("--output-cost", type=float, help="cost per 1k completion tokens")
    linking.add_argument("--currency", help="currency of the costs, e.g. USD")
    linking.add_argument("--default", action="store_true", help="make it the provider's default")
    for name, func, text in (
        ("unlink", cmd_unlink, "remove a link (the model stays)"),
        ("default", cmd_default, "make a linked model the provider's default"),
    ):
        parser = add(sub, name, func, text)
        parser.add_argument("provider", help="provider id")
        parser.add_argument("model", help="model id")

    requests = add(
        commands, "requests", cmd_requests, "recent requests, newest first; `show ID` for one"
    )
    requests.add_argument(
        "action", nargs="*", metavar="show ID", help="one request with its attempts"
    )
    requests.add_argument("--limit", type=int, default=20, help="how many (1-1000, default 20)")
    requests.add_argument("--model", help="only requests for this model")
    requests.add_argument(
        "--provider", help="only requests this provider answered (or, failed, was tried last)"
    )
    requests.add_argument("--tried", metavar="PROVIDER", help="only requests that tried it")
    requests.add_argument("--status", help="success, error or client_closed")
    requests.add_argument("--since", help="Unix ms or a duration back from now: 30m, 24h, 7d")
    requests.set_defaults(parser=requests)
    usage = add(commands, "stats", cmd_stats, "requests, errors, tokens, cost, p50/p95 latency")
    usage.add_argument("--since", help="Unix ms or a duration back from now: 30m, 24h, 7d")
    usage.add_argument(
        "--by", choices=("provider", "model"), default="provider", help="group rows by this"
    )
