"""The ``secrets`` and ``keys`` commands: the credential key and client keys.

provider-router secrets generate-key
provider-router secrets rotate --new-key -        (reads the new key from stdin)
provider-router keys create --name ci --rpm-limit 60 --model gpt-4o-mini
provider-router keys list
provider-router keys revoke key_0123456789abcdef
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from router.cli.output import (
    CommandFailed,
    Subcommands,
    add_json_flag,
    parse_when,
    print_json,
    print_table,
)
from router.errors import RouterError
from router.secrets import (
    Cipher,
    SecretKeyError,
    generate_key,
    key_file_path,
    write_key_file,
)
from router.settings import Settings, load_settings
from router.store import backend, client_keys
from router.store.backend import database_for
from router.store.credentials import rotate_key
from router.store.db import Database


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides={"database_url": args.database})


def cmd_generate_key(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _read_new_key(given: str) -> str:
    if given == "-":
        return sys.stdin.readline().strip()
    return given


async def rotate(settings: Settings, new_key: str) -> tuple[int, str]:
    """Re-encrypt every credential with ``new_key``; return (how many, what to do next)."""
    new = Cipher(new_key, source="--new-key")
    db = database_for(settings, create_key=False)
    if db.cipher is not None and db.cipher.key_id == new.key_id:
        raise SecretKeyError("The new key is the key in use; generate another one.")
    from_file = not settings.secret_key
    path = key_file_path(settings)
    staged = path.with_name(path.name + ".new")
    if from_file:
        # Keep the new key on disk before any value depends on it.
        write_key_file(staged, new_key)
    try:
        await db.open()
        try:
            count = await rotate_key(db, new)
        finally:
            await db.close()
    except BaseException:
        if from_file:
            staged.unlink(missing_ok=True)
        raise
    if from_file:
        staged.replace(path)
        advice = (
            f"The key file {path} now holds the new key. Restart every running server so it "
            "loads it; keep a backup of the key file with your database backups."
        )
    else:
        advice = (
            "Now replace PROVIDER_ROUTER_SECRET_KEY (or auth.secret_key) with the new key "
            "everywhere the proxy runs and restart every server: the old key no longer opens "
            "the stored credentials."
        )
    return count, advice


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not backend.exists(settings):
        print(f"provider-router: no database at {settings.database_label}.", file=sys.stderr)
        return 1
    count, advice = asyncio.run(rotate(settings, _read_new_key(args.new_key)))
    print(f"Re-encrypted {count} credential(s) with the new key.")
    print(advice)
    return 0


def _with_db(settings: Settings, work: Callable[[Database], Any]) -> Any:
    async def run() -> Any:
        await backend.migrate(settings)
        db = database_for(settings)
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def _stamp(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"


def cmd_keys_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name}
    expires = None
    if args.expires_at is not None:
        now = int(time.time() * 1000)
        expires = parse_when(args.expires_at, now, "--expires-at", ahead=True)
    for field, value in (
        ("rpm_limit", args.rpm_limit),
        ("tpm_limit", args.tpm_limit),
        ("models", args.model or None),
        ("expires_at", expires),
    ):
        if value is not None:
            body[field] = value
    created = _with_db(_settings(args), lambda db: client_keys.create_key(db, body))
    if args.json:
        print_json(created)  # the key itself is in it, shown this once
        return 0
    print(f"Created client key {created['id']} ({created['name']}).")
    print("The key is shown only now; store it somewhere safe:")
    print(created["key"])
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _with_db(_settings(args), client_keys.all_keys)
    if args.json:
        print_json({"data": keys})
        return 0
    if not keys:
        print("no client keys")
        return 0
    print_table(
        keys,
        [
            ("ID", lambda k: k["id"]),
            ("PREFIX", lambda k: f"{k['prefix']}..."),
            ("STATE", _key_state),
            ("NAME", lambda k: k["name"]),
            ("MODELS", lambda k: ",".join(k["models"]) if k["models"] else "*"),
            ("RPM", lambda k: k["rpm_limit"]),
            ("TPM", lambda k: k["tpm_limit"]),
            ("EXPIRES", lambda k: _stamp(k.get("expires_at"))),
            ("LAST USED", lambda k: _stamp(k["last_used_at"])),
        ],
    )
    return 0


def _key_state(key: dict[str, Any]) -> str:
    if key["revoked_at"]:
        return "revoked"
    expires = key.get("expires_at")
    return "expired" if expires and expires <= time.time() * 1000 else "active"


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    key = _with_db(_settings(args), lambda db: client_keys.revoke_key(db, args.id))
    if args.json:
        print_json(key)
        return 0
    print(f"Revoked client key {key['id']} ({key['name']}); running servers refuse it within ~1 s.")
    return 0


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except RouterError as exc:
            print(f"provider-router: {exc.message}", file=sys.stderr)
            return 1
        except CommandFailed as exc:
            print(f"provider-router: {exc}", file=sys.stderr)
            return 1

    return run


def register(
    commands: Subcommands,
    with_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``secrets`` and ``keys`` to the ``provider-router`` parser."""
    secrets_parser = commands.add_parser("secrets", help="the key that encrypts credentials")
    secret_commands = secrets_parser.add_subparsers(
        dest="secrets_command", required=True, metavar="COMMAND"
    )
    generate = secret_commands.add_parser("generate-key", help="print a new random secret key")
    generate.set_defaults(func=cmd_generate_key)
    rotate_parser = secret_commands.add_parser(
        "rotate", help="re-encrypt every stored credential with a new key"
    )
    with_config(rotate_parser)
    rotate_parser.add_argument(
        "--new-key",
        required=True,
        help="the new key (from `secrets generate-key`), or '-' to read it from stdin; "
        "write --new-key=KEY for a key that starts with '-'",
    )
    rotate_parser.set_defaults(func=cmd_rotate)

    keys = commands.add_parser("keys", help="client keys for /v1/chat/completions")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = key_commands.add_parser("create", help="create a client key (shown once)")
    with_config(create)
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--rpm-limit", type=int, help="requests per minute")
    create.add_argument("--tpm-limit", type=int, help="tokens per minute")
    create.add_argument(
        "--model", action="append", help="allow only this model (repeatable; default: all)"
    )
    create.add_argument(
        "--expires-at", help="expiry: Unix milliseconds, or a duration from now: 12h, 30d"
    )
    add_json_flag(create)
    create.set_defaults(func=_guard(cmd_keys_create))
    listing = key_commands.add_parser("list", help="list client keys (never the keys)")
    with_config(listing)
    add_json_flag(listing)
    listing.set_defaults(func=_guard(cmd_keys_list))
    revoke = key_commands.add_parser("revoke", help="revoke a client key at once")
    with_config(revoke)
    revoke.add_argument("id", help="the key's id (key_...)")
    add_json_flag(revoke)
    revoke.set_defaults(func=_guard(cmd_keys_revoke))
