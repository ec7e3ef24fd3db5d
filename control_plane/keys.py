"""Ed25519 signing keys kept in the state directory, with rotation and a JWKS.

A rotated key is published (in the JWKS) before it signs: it starts signing at its
`not_before`. A superseded key stays published until every token it could have
signed has expired (`retention_s` after the next key started signing).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

KEYS_FILENAME = "signing-keys.json"
ALGORITHM = "EdDSA"
# Tokens may be verified slightly after their exp by a slow clock; keep keys a bit longer.
RETENTION_SLACK_S = 60.0

Clock = Callable[[], float]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: float
    not_before: float  # starts signing at this time

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_x(self) -> str:
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _b64url(raw)

    def public_jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.public_x(),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    @classmethod
    def generate(cls, now: float, not_before: float) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        # RFC 7638 thumbprint: stable, derived from the public key alone.
        canonical = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)},
            separators=(",", ":"),
            sort_keys=True,
        )
        kid = _b64url(hashlib.sha256(canonical.encode()).digest())
        return cls(kid=kid, private_key=key, created_at=now, not_before=not_before)

    def to_json(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "kid": self.kid,
            "private_key_pem": pem.decode("ascii"),
            "created_at": self.created_at,
            "not_before": self.not_before,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SigningKey:
        key = serialization.load_pem_private_key(obj["private_key_pem"].encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"key {obj.get('kid')!r} is not Ed25519")
        return cls(
            kid=str(obj["kid"]),
            private_key=key,
            created_at=float(obj["created_at"]),
            not_before=float(obj["not_before"]),
        )


def _write_private(path: Path, text: str) -> None:
    """Write atomically; the file is created 0600 and never exists with wider modes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyStore:
    """The signing keys of one control plane, persisted in `state_dir`."""

    def __init__(
        self,
        path: Path,
        keys: list[SigningKey],
        retention_s: float,
        clock: Clock,
        activation_delay_s: float = 0.0,
    ) -> None:
        self._path = path
        self._activation_delay_s = activation_delay_s
        self._keys = sorted(keys, key=lambda k: k.not_before)
        self._retention_s = retention_s + RETENTION_SLACK_S
        self._clock = clock

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        retention_s: float,
        clock: Clock = time.time,
        activation_delay_s: float = 0.0,
    ) -> KeyStore:
        """Load the keys, creating the first one (signing at once) if there is none."""
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / KEYS_FILENAME
        keys: list[SigningKey] = []
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                log.warning("tightening mode of %s from %o to 600", path, mode)
                os.chmod(path, 0o600)
            keys = [SigningKey.from_json(k) for k in json.loads(path.read_text())["keys"]]
        store = cls(path, keys, retention_s, clock, activation_delay_s)
        if not keys:
            now = clock()
            store._keys = [SigningKey.generate(now, now)]
            store._save()
        return store

    @property
    def path(self) -> Path:
        return self._path

    def _save(self) -> None:
        doc = {"keys": [k.to_json() for k in self._keys]}
        _write_private(self._path, json.dumps(doc, indent=1))

    def signing_key(self) -> SigningKey:
        """The newest key whose `not_before` has passed."""
        now = self._clock()
        active = [k for k in self._keys if k.not_before <= now]
        # The first key signs from creation, so there is always one unless the clock went back.
        return active[-1] if active else self._keys[0]

    def published(self) -> list[SigningKey]:
        """Keys in the JWKS: upcoming, signing, and superseded ones whose tokens may live."""
        now = self._clock()
        out: list[SigningKey] = []
        for i, key in enumerate(self._keys):
            successor = self._keys[i + 1] if i + 1 < len(self._keys) else None
            if successor is None or now < successor.not_before + self._retention_s:
                out.append(key)
        return out

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in self.published() if k.kid == kid), None)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.public_jwk() for k in self.published()]}

    def rotate(self, activate_after_s: float | None = None) -> SigningKey:
        """Publish a new key now; it signs once `activate_after_s` (default: the store's
        activation delay) has passed."""
        delay = self._activation_delay_s if activate_after_s is None else activate_after_s
        now = self._clock()
        new = SigningKey.generate(now, now + delay)
        self._keys = [*self.published(), new]  # drop keys whose tokens all expired
        self._keys.sort(key=lambda k: k.not_before)
        self._save()
        return new
