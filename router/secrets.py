"""The credential cipher: sensitive provider config values are encrypted at rest with AES-GCM.

A stored value looks like ``enc:v1:<key id>:<base64 of nonce + ciphertext + tag>``. The key id is
the first 8 hex digits of the SHA-256 of the key: it tells which key a value needs (a wrong key
is reported by id, never by value). Each value is bound to its row: the provider id and config
key are the associated data, so a ciphertext copied to another row does not decrypt.

The key is 32 random bytes in URL-safe base64 (what ``provider-router secrets generate-key``
prints). It comes from ``PROVIDER_ROUTER_SECRET_KEY`` or ``auth.secret_key``; when neither is set
it is generated on first start into ``secret-key`` beside the database (mode 0600) and the log
says where, never what.

Example::

    cipher = Cipher(generate_key())
    token = cipher.encrypt("sk-...", row_context("openai-main", "apiKey"))
    cipher.decrypt(token, row_context("openai-main", "apiKey"))  # "sk-..."
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from router.settings import Settings, SettingsError

log = logging.getLogger("provider_router.secrets")

PREFIX = "enc:v1:"
KEY_FILE = "secret-key"
_NONCE_BYTES = 12


class SecretKeyError(SettingsError):
    """The secret key is malformed, or is not the key the stored values were encrypted with."""


def generate_key() -> str:
    """A new key: 32 random bytes as URL-safe base64 (44 characters).

    Never one that starts with '-': a command line would read ``--new-key -Abc...`` as an option.
    """
    while True:
        key = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
        if not key.startswith("-"):
            return key


def parse_key(text: str, source: str) -> bytes:
    """The 32 key bytes of ``text``; :class:`SecretKeyError` naming ``source`` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SecretKeyError(
            f"The secret key from {source} is not 32 bytes of URL-safe base64; make one with "
            "`provider-router secrets generate-key`."
        )
    return raw


def row_context(provider_id: str, key: str) -> bytes:
    """The associated data that binds a value to its provider_configs row."""
    return f"provider_configs\x00{provider_id}\x00{key}".encode()


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def key_id_of(value: str) -> str:
    """The key id an encrypted value names (``?`` if it names none)."""
    parts = value.split(":", 3)
    return parts[2] if len(parts) == 4 else "?"


class Cipher:
    """Encrypts and decrypts config values with one AES-256-GCM key."""

    def __init__(self, key: bytes | str, *, source: str = "the settings") -> None:
        raw = parse_key(key, source) if isinstance(key, str) else key
        if len(raw) != 32:
            raise SecretKeyError(f"The secret key from {source} must be 32 bytes.")
        self._aead = AESGCM(raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:8]
        self.source = source

    def __repr__(self) -> str:
        return f"Cipher(key_id={self.key_id!r}, source={self.source!r})"

    def encrypt(self, plaintext: str, context: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context)
        return f"{PREFIX}{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, value: str, context: bytes) -> str:
        """The plaintext of ``value``; :class:`SecretKeyError` if this key cannot open it."""
        if not is_encrypted(value):
            raise SecretKeyError("The stored value is not in the enc:v1 format.")
        found = key_id_of(value)
        if found != self.key_id:
            raise SecretKeyError(
                f"A stored credential was encrypted with key {found}, but the secret key from "
                f"{self.source} is key {self.key_id}. Start with the key the database was "
                "encrypted with (PROVIDER_ROUTER_SECRET_KEY, auth.secret_key or the secret-key "
                "file beside the database)."
            )
        try:
            blob = base64.urlsafe_b64decode(value.rsplit(":", 1)[1].encode("ascii"))
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
            raise SecretKeyError(
                f"A stored credential does not decrypt with key {self.key_id} from {self.source}:"
                " it was altered or copied from another row."
            ) from None


def key_file_path(settings: Settings) -> Path:
    return settings.state_dir / KEY_FILE


def write_key_file(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` with mode 0600, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)


def create_file_once(path: Path, text: str) -> str:
    """Write ``text`` to a new 0600 file at ``path``, unless one exists; return what it holds.

    Two processes starting on a new database at once (two servers, a server and a CLI command)
    must end up with the same key or token: the file is published with a hard link, which fails
    if another process got there first, and then that process's value is used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
        except OSError:
            # A file system without hard links (some network mounts): create it exclusively
            # in place instead; a reader racing the write may then see it empty, not another.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path.read_text(encoding="utf-8").strip()
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    finally:
        temporary.unlink(missing_ok=True)
    return text


def resolve_cipher(settings: Settings, *, create: bool = True) -> Cipher:
    """The cipher for the settings' key, or the key file's (generated when ``create``)."""
    if settings.secret_key:
        return Cipher(settings.secret_key, source="PROVIDER_ROUTER_SECRET_KEY / auth.secret_key")
    path = key_file_path(settings)
    staged = path.with_name(path.name + ".new")
    if staged.exists():
        log.warning(
            "%s is left from an interrupted `secrets rotate`. If the credentials do not open "
            "with %s, the rotation was committed: move %s over it.",
            staged,
            path,
            staged,
        )
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning(
                "The secret key file %s can be read by other users; restrict it with "
                "`chmod 600 %s`.",
                path,
                path,
            )
        return Cipher(path.read_text(encoding="utf-8").strip(), source=str(path))
    if not create:
        raise SecretKeyError(
            f"No secret key: set PROVIDER_ROUTER_SECRET_KEY or auth.secret_key, or start "
            f"`provider-router serve` once to generate {path}."
        )
    key = generate_key()
    found = create_file_once(path, key)
    if found == key:
        log.warning(
            "No secret key was configured; generated one into %s (mode 0600). Back it up: the "
            "provider credentials in the database cannot be read without it.",
            path,
        )
    return Cipher(found, source=str(path))
