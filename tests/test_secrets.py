"""Credentials at rest: the cipher, the key's sources, start-up checks, rotation and its CLI."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import secrets as stdlib_secrets
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from router import secrets as secrets_module
from router.app import prepare_database
from router.cli.main import main
from router.errors import InvalidRequest
from router.gateway.auth import TOKEN_FILE, resolve_admin_token
from router.secrets import (
    KEY_FILE,
    Cipher,
    SecretKeyError,
    generate_key,
    resolve_cipher,
    row_context,
)
from router.settings import Settings, load_settings
from router.store import configs, migrations, providers
from router.store.backend import database_for
from router.store.credentials import StaleKeyError, rotate_key
from router.store.db import Database
from router.store.migrations import migrate
from tests.helpers import make_settings

SECRET = "sk-fake-at-rest-0123456789abcdef"
PROVIDER = {
    "id": "p1",
    "name": "p1",
    "type": "openai",
    "config": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": SECRET},
}


def file_bytes(path: Path) -> bytes:
    found = b""
    for suffix in ("", "-wal", "-journal"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            found += candidate.read_bytes()
    return found


async def create_provider(settings: Settings) -> None:
    await prepare_database(settings)
    db = database_for(settings)
    await db.open()
    try:
        await providers.create_provider(db, PROVIDER)
    finally:
        await db.close()


async def stored_key(settings: Settings) -> str:
    db = database_for(settings)
    await db.open()
    try:
        value: str = (await configs.provider_config(db, "p1"))["apiKey"]
        return value
    finally:
        await db.close()


# -- the cipher --------------------------------------------------------------------------------


def test_a_value_round_trips_and_never_encrypts_the_same_way_twice() -> None:
    cipher = Cipher(generate_key())
    first = cipher.encrypt(SECRET, row_context("p1", "apiKey"))
    second = cipher.encrypt(SECRET, row_context("p1", "apiKey"))
    assert first != second
    assert first.startswith(f"enc:v1:{cipher.key_id}:")
    assert SECRET not in first
    assert cipher.decrypt(first, row_context("p1", "apiKey")) == SECRET


def test_a_value_copied_to_another_row_or_altered_does_not_decrypt() -> None:
    cipher = Cipher(generate_key())
    token = cipher.encrypt(SECRET, row_context("p1", "apiKey"))
    with pytest.raises(SecretKeyError, match="altered or copied"):
        cipher.decrypt(token, row_context("p2", "apiKey"))
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretKeyError):
        cipher.decrypt(tampered, row_context("p1", "apiKey"))


def test_another_key_is_named_by_its_id_and_never_shown() -> None:
    key_a, key_b = generate_key(), generate_key()
    token = Cipher(key_a).encrypt(SECRET, b"x")
    with pytest.raises(SecretKeyError) as caught:
        Cipher(key_b, source="the test").decrypt(token, b"x")
    message = str(caught.value)
    assert Cipher(key_a).key_id in message and Cipher(key_b).key_id in message
    assert key_a not in message and key_b not in message and SECRET not in message


@pytest.mark.parametrize("bad", ["short", "!" * 44, base64.urlsafe_b64encode(b"x" * 31).decode()])
def test_a_malformed_key_is_refused_with_a_sentence(bad: str) -> None:
    with pytest.raises(SecretKeyError, match="32 bytes of URL-safe base64") as caught:
        Cipher(bad, source="PROVIDER_ROUTER_SECRET_KEY")
    assert bad not in str(caught.value)


def test_a_generated_key_is_32_bytes_of_url_safe_base64() -> None:
    key = generate_key()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert key != generate_key()


def test_secrets_generate_key_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secrets", "generate-key"]) == 0
    key = capsys.readouterr().out.strip()
    assert Cipher(key).key_id


# -- where the key comes from ------------------------------------------------------------------


def test_without_a_key_one_is_generated_into_a_0600_file_and_the_log_says_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="provider_router.secrets"):
        first = resolve_cipher(settings)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert str(path) in caplog.text and key not in caplog.text
    assert resolve_cipher(settings).key_id == first.key_id == Cipher(key).key_id


def test_the_environment_key_wins_over_the_key_file(tmp_path: Path) -> None:
    key = generate_key()
    settings = load_settings(
        environ={
            "PROVIDER_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "PROVIDER_ROUTER_SECRET_KEY": key,
        }
    )
    assert key not in repr(settings)
    assert resolve_cipher(settings).key_id == Cipher(key).key_id
    assert not (tmp_path / KEY_FILE).exists()


async def test_a_database_without_a_cipher_refuses_to_store_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    migrate(path)
    db = Database(path)
    await db.open()
    try:
        with pytest.raises(SecretKeyError, match="no credential cipher"):
            await providers.create_provider(db, PROVIDER)
    finally:
        await db.close()
    assert SECRET.encode() not in file_bytes(path)


# -- start-up ----------------------------------------------------------------------------------


async def test_credentials_are_encrypted_in_the_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    await create_provider(settings)
    assert await stored_key(settings) == SECRET
    assert SECRET.encode() not in file_bytes(settings.database_path)


def plaintext_database(settings: Settings) -> None:
    """A database as versions before encryption left it: the apiKey stored in clear."""
    migrate(settings.database_path)
    with sqlite3.connect(settings.database_path) as conn:
        conn.execute(
            "INSERT INTO providers (id, name, type, created_at, updated_at)"
            " VALUES ('p1', 'p1', 'openai', 1, 1)"
        )
        conn.executemany(
            "INSERT INTO provider_configs VALUES ('p1', ?, ?, ?, 1, 1)",
            [("baseURL", '"http://127.0.0.1:9/v1"', 0), ("apiKey", f'"{SECRET}"', 1)],
        )


async def test_plaintext_credentials_of_an_older_database_are_encrypted_at_start(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    plaintext_database(settings)
    assert SECRET.encode() in file_bytes(settings.database_path)

    await prepare_database(settings)

    assert SECRET.encode() not in file_bytes(settings.database_path)
    assert await stored_key(settings) == SECRET


async def test_the_backup_before_a_migration_holds_no_plaintext_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    plaintext_database(settings)
    shipped = migrations.available()
    extra = migrations.Migration(99, "extra", "CREATE TABLE extra (x INTEGER);")
    monkeypatch.setattr(migrations, "available", lambda: [*shipped, extra])

    await prepare_database(settings)

    [backup] = await asyncio.to_thread(lambda: list(tmp_path.glob("*.bak")))
    assert SECRET.encode() not in file_bytes(backup)
    assert SECRET.encode() not in file_bytes(settings.database_path)
    assert await stored_key(settings) == SECRET


async def test_a_wrong_key_at_start_up_is_an_error_naming_the_problem(tmp_path: Path) -> None:
    await create_provider(make_settings(tmp_path, secret_key=generate_key()))
    wrong = make_settings(tmp_path, secret_key=generate_key())
    with pytest.raises(SecretKeyError, match="encrypted with key"):
        await prepare_database(wrong)


def test_serve_with_a_wrong_key_exits_2_with_a_sentence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'router.db'}"
    asyncio.run(create_provider(make_settings(tmp_path)))
    wrong = generate_key()
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--database", url],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={"PROVIDER_ROUTER_SECRET_KEY": wrong, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "encrypted with key" in result.stderr
    assert "Traceback" not in result.stderr
    assert wrong not in result.stderr and SECRET not in result.stderr


# -- rotation ----------------------------------------------------------------------------------


async def test_rotate_with_the_key_file_re_encrypts_and_replaces_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    await create_provider(settings)
    old = (tmp_path / KEY_FILE).read_text().strip()
    new = generate_key()
    monkeypatch.delenv("PROVIDER_ROUTER_SECRET_KEY", raising=False)
    code = await asyncio.to_thread(
        main, ["secrets", "rotate", "--new-key", new, "--database", settings.database_url]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Re-encrypted 1 credential(s)" in out and "Restart" in out
    assert new not in out and old not in out
    assert (tmp_path / KEY_FILE).read_text().strip() == new
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert await stored_key(settings) == SECRET
    with pytest.raises(SecretKeyError):
        await stored_key(make_settings(tmp_path, secret_key=old))
    assert SECRET.encode() not in file_bytes(settings.database_path)


async def test_rotate_with_an_environment_key_says_to_replace_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_key(), generate_key()
    await create_provider(make_settings(tmp_path, secret_key=old))
    monkeypatch.setenv("PROVIDER_ROUTER_SECRET_KEY", old)
    monkeypatch.setattr("sys.stdin", io.StringIO(new + "\n"))
    url = make_settings(tmp_path).database_url
    code = await asyncio.to_thread(main, ["secrets", "rotate", "--new-key", "-", "--database", url])
    assert code == 0
    assert "replace PROVIDER_ROUTER_SECRET_KEY" in capsys.readouterr().out
    assert not (tmp_path / KEY_FILE).exists()
    assert await stored_key(make_settings(tmp_path, secret_key=new)) == SECRET


async def test_rotate_to_the_same_or_a_malformed_key_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    settings = make_settings(tmp_path, secret_key=key)
    await create_provider(settings)
    before = file_bytes(settings.database_path)
    monkeypatch.setenv("PROVIDER_ROUTER_SECRET_KEY", key)
    for new in (key, "not-a-key"):
        args = ["secrets", "rotate", "--new-key", new, "--database", settings.database_url]
        assert await asyncio.to_thread(main, args) == 2
        assert key not in capsys.readouterr().err
    assert await stored_key(settings) == SECRET
    with sqlite3.connect(settings.database_path) as conn:
        [(value,)] = conn.execute("SELECT value FROM provider_configs WHERE key = 'apiKey'")
    assert value.encode() in before


async def test_a_masked_value_cannot_create_a_provider(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    await prepare_database(settings)
    db = database_for(settings)
    await db.open()
    try:
        config = {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "****cdef"}
        body = {**PROVIDER, "config": config}
        with pytest.raises(InvalidRequest, match="masked"):
            await providers.create_provider(db, body)
    finally:
        await db.close()


async def test_a_malformed_configured_key_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="PROVIDER_ROUTER_SECRET_KEY") as caught:
        await prepare_database(make_settings(tmp_path, secret_key="too-short-key"))
    assert "too-short-key" not in str(caught.value)


def test_a_key_file_others_can_read_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    resolve_cipher(settings)
    (tmp_path / KEY_FILE).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="provider_router.secrets"):
        resolve_cipher(settings)
    assert "chmod 600" in caplog.text


def test_a_key_file_made_by_another_process_first_is_kept_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes starting on a new database at once must share one key: the loser of the
    race uses the winner's key, or credentials it encrypts could never be read again."""
    settings = make_settings(tmp_path)
    path = tmp_path / KEY_FILE
    theirs = generate_key()
    real_generate = secrets_module.generate_key

    def generate_while_another_process_writes_the_file() -> str:
        path.write_text(theirs + "\n")  # the other process wins between the check and the write
        return real_generate()

    monkeypatch.setattr(
        secrets_module, "generate_key", generate_while_another_process_writes_the_file
    )
    cipher = resolve_cipher(settings)
    assert path.read_text().strip() == theirs
    assert cipher.key_id == Cipher(theirs).key_id
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left behind


def test_an_admin_token_file_made_by_another_process_first_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, admin_token=None)
    path = tmp_path / TOKEN_FILE
    real_token = stdlib_secrets.token_urlsafe

    def token_while_another_process_writes_the_file(size: int) -> str:
        path.write_text("pr-admin-theirs-0123456789\n")
        return real_token(size)

    monkeypatch.setattr(
        stdlib_secrets, "token_urlsafe", token_while_another_process_writes_the_file
    )
    assert resolve_admin_token(settings) == "pr-admin-theirs-0123456789"
    assert path.read_text().strip() == "pr-admin-theirs-0123456789"
    monkeypatch.undo()
    path.unlink()
    made = resolve_admin_token(settings)
    assert made.startswith("pr-admin-") and path.read_text().strip() == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_and_token_files_are_made_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("router.secrets.os.link", no_links)
    settings = make_settings(tmp_path, admin_token=None)
    cipher = resolve_cipher(settings)
    token = resolve_admin_token(settings)
    assert Cipher((tmp_path / KEY_FILE).read_text().strip()).key_id == cipher.key_id
    assert (tmp_path / TOKEN_FILE).read_text().strip() == token
    for name in (KEY_FILE, TOKEN_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([KEY_FILE, TOKEN_FILE])
    assert resolve_cipher(settings).key_id == cipher.key_id  # read back, not made again


async def test_a_process_still_holding_the_old_key_cannot_write_a_credential(
    tmp_path: Path,
) -> None:
    """After `secrets rotate` elsewhere, a running server must not encrypt with the old key:
    once restarted with the new one, nothing could read that value."""
    old = generate_key()
    settings = make_settings(tmp_path, secret_key=old)
    await create_provider(settings)
    server = database_for(settings)  # a running server: opened before the rotation
    await server.open()
    try:
        rotating = database_for(settings)
        await rotating.open()
        try:
            new = Cipher(generate_key())
            assert await rotate_key(rotating, new) == 1
        finally:
            await rotating.close()
        # A new provider is the write that decrypts nothing first (updates fail on the merge).
        second = {**PROVIDER, "id": "p2", "name": "p2"}
        with pytest.raises(StaleKeyError) as caught:
            await providers.create_provider(server, second)
        assert new.key_id in caught.value.message and "restart" in caught.value.message.lower()
    finally:
        await server.close()
    restarted = Database(settings.database_path, cipher=new)
    await restarted.open()
    try:
        assert (await configs.provider_config(restarted, "p1"))["apiKey"] == SECRET
        assert [p["id"] for p in await providers.list_providers(restarted)] == ["p1"]
    finally:
        await restarted.close()


def test_a_readable_admin_token_file_is_warned_about_by_path_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, admin_token=None)
    path = tmp_path / TOKEN_FILE
    path.write_text("pr-admin-readable-0123456789\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="provider_router.auth"):
        assert resolve_admin_token(settings) == "pr-admin-readable-0123456789"
    assert "chmod 600" in caplog.text and str(path) in caplog.text
    assert "pr-admin-readable" not in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="provider_router.auth"):
        resolve_admin_token(settings)
    assert caplog.text == ""


def test_a_key_left_by_an_interrupted_rotation_is_pointed_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If rotate dies between its commit and moving the new key file into place, the database
    needs secret-key.new: the log must say so (by path, never the key)."""
    settings = make_settings(tmp_path)
    resolve_cipher(settings)
    staged = tmp_path / (KEY_FILE + ".new")
    key = generate_key()
    staged.write_text(key + "\n")
    with caplog.at_level(logging.WARNING, logger="provider_router.secrets"):
        resolve_cipher(settings)
    assert str(staged) in caplog.text and "interrupted" in caplog.text
    assert key not in caplog.text


def test_generated_keys_never_look_like_an_option() -> None:
    assert not any(generate_key().startswith("-") for _ in range(2000))


async def test_rotate_takes_a_key_that_starts_with_a_dash_in_the_equals_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    await create_provider(settings)
    monkeypatch.delenv("PROVIDER_ROUTER_SECRET_KEY", raising=False)
    dashed = base64.urlsafe_b64encode(b"\xf8" + os.urandom(31)).decode()  # operator-made key
    assert dashed.startswith("-")
    code = await asyncio.to_thread(
        main, ["secrets", "rotate", f"--new-key={dashed}", "--database", settings.database_url]
    )
    assert code == 0, capsys.readouterr().err
    assert await stored_key(make_settings(tmp_path, secret_key=dashed)) == SECRET
