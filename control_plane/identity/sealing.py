"""Secrets at rest, sealed: what the control plane keeps for others (provider credentials,
the GitHub App's key) is stored encrypted, and opened only where it is used.

AES-256-GCM (``cryptography``) under one key the operator gives every replica
(``CONTROL_PLANE_SECRETS_KEY_FILE``; a replica alone may let it be made under its state
directory). Each sealed value names the key it was sealed with (so a wrong key is a clear
error, and keys can be rotated) and is bound to where it is stored (the associated data:
a sealed value copied into another row does not open there).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vm_agent.common.private_files import FileUnusable, NotPrivate, read_private

_VERSION = b"s1"
_NONCE = 12
_KID = 8
KEY_BYTES = 32


class SealError(Exception):
    """A value cannot be opened (wrong key, tampered, or not sealed by us); never says more."""


class KeyFileError(Exception):
    pass


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"vm-agent sealing key id\0" + key).digest()[:_KID]


class Sealer:
    """Seals with the first key; opens with any of them (the old ones during a rotation)."""

    def __init__(self, key: bytes, *old: bytes) -> None:
        for k in (key, *old):
            if len(k) != KEY_BYTES:
                raise ValueError(f"a sealing key is {KEY_BYTES} bytes")
        self._current = key
        self._keys = {key_id(k): k for k in (key, *old)}

    def seal(self, plaintext: bytes, where: str) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self._current).encrypt(nonce, plaintext, _aad(where))
        return _VERSION + key_id(self._current) + nonce + sealed

    def open(self, blob: bytes, where: str) -> bytes:
        if not blob.startswith(_VERSION) or len(blob) < len(_VERSION) + _KID + _NONCE + 16:
            raise SealError("not a sealed value")
        body = blob[len(_VERSION) :]
        key = self._keys.get(body[:_KID])
        if key is None:
            raise SealError("sealed with a key this control plane does not have")
        nonce, sealed = body[_KID : _KID + _NONCE], body[_KID + _NONCE :]
        try:
            return AESGCM(key).decrypt(nonce, sealed, _aad(where))
        except InvalidTag:
            raise SealError("the sealed value does not open here (tampered or moved)") from None

    def seal_text(self, text: str, where: str) -> str:
        return base64.b64encode(self.seal(text.encode(), where)).decode()

    def open_text(self, sealed: str, where: str) -> str:
        try:
            blob = base64.b64decode(sealed, validate=True)
        except ValueError:
            raise SealError("not a sealed value") from None
        return self.open(blob, where).decode()


def _aad(where: str) -> bytes:
    return b"vm-agent sealed\0" + where.encode()


def load_key_file(path: Path, *, create: bool) -> bytes:
    """The key in ``path`` (base64 of 32 bytes), refused unless only its owner may read it.

    ``create``: make it (0600, atomically) if it does not exist.
    """
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another replica made meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        raw = read_private(path, "secrets key")
    except NotPrivate:
        raise KeyFileError(
            f"secrets key {path} is readable by others (mode {_mode(path)}): chmod 600 it"
        ) from None
    except FileUnusable as exc:
        raise KeyFileError(str(exc)) from None
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"secrets key {path} is not base64 of {KEY_BYTES} bytes")
    return key


def _mode(path: Path) -> str:
    try:
        return f"{stat.S_IMODE(path.stat().st_mode):04o}"
    except OSError:
        return "?"
