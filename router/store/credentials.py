"""Provider credentials at rest: how sensitive config values are stored, checked and re-keyed.

A sensitive value is stored as a JSON string holding ``enc:v1:<key id>:<base64>`` (see
:mod:`router.secrets`); everything else is stored as plain JSON. At start-up
:func:`prepare_credentials` proves the key opens every stored value (a wrong key stops the
start with a :class:`~router.secrets.SecretKeyError`, so nothing undecryptable is ever sent
upstream) and encrypts values left in plaintext by databases made before encryption existed.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from router.errors import RouterError
from router.redact import remember
from router.secrets import Cipher, SecretKeyError, is_encrypted, key_id_of, row_context
from router.store.db import Connection, Database

log = logging.getLogger("provider_router.credentials")


class StaleKeyError(RouterError):
    """This process's key is not the one the stored credentials use (a 500: restart it)."""


def _need(cipher: Cipher | None) -> Cipher:
    if cipher is None:
        raise SecretKeyError(
            "This database has no credential cipher attached; open it with "
            "router.store.db.database_for(settings) or pass Database(path, cipher=...)."
        )
    return cipher


def encode_value(
    cipher: Cipher | None, provider_id: str, key: str, value: Any, sensitive: bool
) -> str:
    """The text stored in ``provider_configs.value``: encrypted when ``sensitive``."""
    text = orjson.dumps(value).decode()
    if not sensitive:
        return text
    remember(value)
    token = _need(cipher).encrypt(text, row_context(provider_id, key))
    return orjson.dumps(token).decode()


def decode_value(cipher: Cipher | None, provider_id: str, key: str, stored: str) -> Any:
    """The value in clear from the text stored in ``provider_configs.value``."""
    value = orjson.loads(stored)
    if is_encrypted(value):
        clear = orjson.loads(_need(cipher).decrypt(value, row_context(provider_id, key)))
        remember(clear)  # from now on scrubbed wherever it appears, whatever the shape
        return clear
    return value


async def prepare_credentials(db: Database) -> int:
    """Check the key against every stored secret and encrypt plaintext ones; return how many.

    Raises :class:`SecretKeyError` (naming the key ids, never a value) if a stored value does
    not decrypt with the attached key. Everything happens in one transaction.
    """
    cipher = _need(db.cipher)
    encrypted = 0
    async with db.transaction() as conn:
        rows = await conn.execute_fetchall(
            "SELECT provider_id, key, value, is_sensitive FROM provider_configs"
        )
        for row in rows:
            provider_id, key, stored, sensitive = row
            value = orjson.loads(stored)
            if is_encrypted(value):
                cipher.decrypt(value, row_context(provider_id, key))  # raises on a wrong key
            elif sensitive:
                await conn.execute(
                    "UPDATE provider_configs SET value = ? WHERE provider_id = ? AND key = ?",
                    (encode_value(cipher, provider_id, key, value, True), provider_id, key),
                )
                encrypted += 1
    if encrypted:
        log.info("Encrypted %d credential(s) that were stored in plaintext", encrypted)
        # SQLite keeps old page images in the WAL until a checkpoint; do not leave the
        # plaintext there.
        await db.checkpoint()
    return encrypted


async def check_key_current(conn: Connection, cipher: Cipher | None) -> None:
    """Refuse to encrypt with a key the stored credentials no longer use.

    After ``secrets rotate`` in another process, a server still holding the old key would
    write a value no one could read once it restarts with the new key. Call inside the write
    transaction, before encrypting.
    """
    cipher = _need(cipher)
    async with conn.execute(
        "SELECT value FROM provider_configs WHERE is_sensitive = 1 AND value LIKE '\"enc:v1:%'"
        " LIMIT 1"
    ) as cursor:
        row = await cursor.fetchone()
    if row is not None and (found := key_id_of(orjson.loads(row[0]))) != cipher.key_id:
        raise StaleKeyError(
            f"The stored credentials are encrypted with key {found}, but this process holds key "
            f"{cipher.key_id} (was `provider-router secrets rotate` run?). Restart it with the "
            "new key; nothing was changed."
        )


async def rotate_key(db: Database, new: Cipher) -> int:
    """Re-encrypt every stored secret with ``new`` in one transaction; return how many.

    The database's own cipher must open every value first: nothing changes if one does not.
    """
    old = _need(db.cipher)
    changed = 0
    async with db.transaction() as conn:
        rows = await conn.execute_fetchall(
            "SELECT provider_id, key, value, is_sensitive FROM provider_configs"
        )
        for provider_id, key, stored, sensitive in rows:
            value = orjson.loads(stored)
            if is_encrypted(value):
                if key_id_of(value) == new.key_id:
                    continue
                plain = old.decrypt(value, row_context(provider_id, key))
            elif sensitive:
                plain = stored
            else:
                continue
            token = orjson.dumps(new.encrypt(plain, row_context(provider_id, key))).decode()
            await conn.execute(
                "UPDATE provider_configs SET value = ? WHERE provider_id = ? AND key = ?",
                (token, provider_id, key),
            )
            changed += 1
    db.cipher = new
    await db.checkpoint()
    return changed
