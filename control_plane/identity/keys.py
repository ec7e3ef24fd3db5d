"""Ed25519 signing keys kept in the database, with rotation and a JWKS.

A rotated key is published (in the JWKS) before it signs: it starts signing at its
`not_before`. A superseded key stays published until every token it could have
signed has expired (`retention_s` after the next key started signing).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, RowMapping, delete, insert, select

from control_plane.identity.ledger import note_ledger_start
from control_plane.storage.db import signing_keys

log = logging.getLogger(__name__)

# Where keys were kept before they moved into the database (imported once, then removed).
KEYS_FILENAME = "signing-keys.json"
ALGORITHM = "EdDSA"
# Tokens may be verified slightly after their exp by a slow clock; keep keys a bit longer.
RETENTION_SLACK_S = 60.0
# A rotated key may wait at most this long before it signs (a year).
MAX_ACTIVATION_DELAY_S = 365 * 24 * 3600.0

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

    def to_row(self) -> dict[str, Any]:
        row = self.to_json()
        return {k: row[k] for k in ("kid", "private_key_pem", "created_at", "not_before")}

    @classmethod
    def from_row(cls, row: RowMapping) -> SigningKey:
        return cls.from_json(dict(row))

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


class KeyStore:
    """The signing keys of the control plane, kept in the database so every replica signs
    and verifies with the same keys.

    Each replica caches the keys for `cache_s` (a rotation is published
    `activation_delay_s` before it signs, far longer than that) and reloads at once when
    asked for a kid it does not know, so a token signed by a key that another replica
    just made verifies here too.
    """

    def __init__(
        self,
        engine: Engine,
        retention_s: float,
        clock: Clock,
        activation_delay_s: float = 0.0,
        cache_s: float = 10.0,
    ) -> None:
        self._engine = engine
        self._activation_delay_s = activation_delay_s
        self._retention_s = retention_s + RETENTION_SLACK_S
        self._clock = clock
        self._cache_s = cache_s
        self._parsed: dict[str, SigningKey] = {}
        self._keys: list[SigningKey] = []
        self._loaded_at: float | None = None

    @classmethod
    def open(
        cls,
        engine: Engine,
        *,
        retention_s: float,
        clock: Clock = time.time,
        activation_delay_s: float = 0.0,
        cache_s: float = 10.0,
        legacy_dir: Path | None = None,
    ) -> KeyStore:
        """Load the keys, importing a legacy keys file from `legacy_dir` (then removed) and
        creating the first key (signing at once) if there is none."""
        store = cls(engine, retention_s, clock, activation_delay_s, cache_s)
        if legacy_dir is not None:
            store._import_file(legacy_dir / KEYS_FILENAME)
        store._reload()
        if not store._keys:
            now = clock()
            # Two replicas starting on an empty database may both make one: both are
            # published, either may sign, and every replica verifies both.
            store._insert(SigningKey.generate(now, now))
            store._reload()
        return store

    def _import_file(self, path: Path) -> None:
        if not path.exists():
            return
        keys = [SigningKey.from_json(k) for k in json.loads(path.read_text())["keys"]]
        with self._engine.begin() as conn:
            known = set(conn.execute(select(signing_keys.c.kid)).scalars())
            for key in keys:
                if key.kid not in known:
                    conn.execute(insert(signing_keys).values(**key.to_row()))
            # Callback tokens these keys signed until now were never recorded by jti.
            note_ledger_start(conn, self._clock())
        # A second copy of private keys, no longer kept up to date, is a liability.
        path.unlink()
        log.info("imported %d signing keys from %s into the database; removed it", len(keys), path)

    def _insert(self, key: SigningKey) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(signing_keys).values(**key.to_row()))

    def _reload(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(select(signing_keys)).mappings().all()
        keys = []
        for row in rows:
            key = self._parsed.get(row["kid"])
            if key is None:
                key = self._parsed[row["kid"]] = SigningKey.from_row(row)
            keys.append(key)
        self._keys = sorted(keys, key=lambda k: k.not_before)
        self._loaded_at = self._clock()

    def _current(self) -> list[SigningKey]:
        now = self._clock()
        if self._loaded_at is None or not 0 <= now - self._loaded_at < self._cache_s:
            self._reload()
        return self._keys

    def signing_key(self) -> SigningKey:
        """The newest key whose `not_before` has passed."""
        keys = self._current()
        now = self._clock()
        active = [k for k in keys if k.not_before <= now]
        # The first key signs from creation, so there is always one unless the clock went back.
        return active[-1] if active else keys[0]

    def _published(self, keys: list[SigningKey]) -> list[SigningKey]:
        now = self._clock()
        out: list[SigningKey] = []
        for i, key in enumerate(keys):
            successor = keys[i + 1] if i + 1 < len(keys) else None
            if successor is None or now < successor.not_before + self._retention_s:
                out.append(key)
        return out

    def published(self) -> list[SigningKey]:
        """Keys in the JWKS: upcoming, signing, and superseded ones whose tokens may live."""
        return self._published(self._current())

    def find(self, kid: str) -> SigningKey | None:
        found = next((k for k in self.published() if k.kid == kid), None)
        if found is None and kid not in self._parsed:
            # Perhaps another replica made it a moment ago. (One small query; a made-up
            # kid costs no more than the ledger lookup every callback request makes.)
            self._reload()
            found = next((k for k in self.published() if k.kid == kid), None)
        return found

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.public_jwk() for k in self.published()]}

    def rotate(self, activate_after_s: float | None = None) -> SigningKey:
        """Publish a new key now; it signs once `activate_after_s` (default: the store's
        activation delay) has passed. Keys whose tokens have all expired are dropped."""
        delay = self._activation_delay_s if activate_after_s is None else activate_after_s
        # Checked before anything is stored: a key with not_before=inf would never sign,
        # nor ever let an older one leave the JWKS.
        if not (math.isfinite(delay) and 0 <= delay <= MAX_ACTIVATION_DELAY_S):
            raise ValueError(
                f"activation delay must be from 0 to {MAX_ACTIVATION_DELAY_S:.0f} s, not {delay}"
            )
        now = self._clock()
        new = SigningKey.generate(now, now + delay)
        self._reload()
        kept = {k.kid for k in self._published(self._keys)}
        with self._engine.begin() as conn:
            conn.execute(insert(signing_keys).values(**new.to_row()))
            if stale := [k.kid for k in self._keys if k.kid not in kept]:
                conn.execute(delete(signing_keys).where(signing_keys.c.kid.in_(stale)))
        self._reload()
        return new
