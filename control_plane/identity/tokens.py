"""Minting and verifying the control plane's JWTs (EdDSA, `kid` in the header).

Three kinds:
- callback token: aud "control-plane", scope "node-callback", sub = node id (the VM's);
  every one minted is recorded by `jti` in the ledger (control_plane.identity.ledger), and a
  refresh revokes the one it replaces after a grace;
- viewer token: aud "vm-agent", node = node id, scope "read" / "read write" (the daemon's),
  or "node" for the control plane's own connection to a node (every session on it);
- user token: aud "control-plane", scope "user" or "user admin", sub = user id
  (task submission, GitHub links; "admin" also reads stored node events).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import jwt
from sqlalchemy import Engine

from control_plane.identity.keys import ALGORITHM, Clock, KeyStore
from control_plane.identity.ledger import CallbackLedger, LedgerEntry
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import make_engine, sqlite_url
from control_plane.storage.migrate import upgrade

CALLBACK_AUDIENCE = "control-plane"
CALLBACK_SCOPE = "node-callback"
VIEWER_AUDIENCE = "vm-agent"
VIEWER_SCOPES = frozenset({"read", "write", "node"})
USER_AUDIENCE = "control-plane"
USER_SCOPE = "user"
ADMIN_SCOPE = "admin"


class TokenError(Exception):
    """Base of verification failures."""


class TokenExpiredError(TokenError):
    pass


class TokenInvalidError(TokenError):
    """Bad signature, unknown key, malformed, wrong issuer: we did not mint it."""


class TokenRevokedError(TokenError):
    """A callback token replaced by a refresh, past the grace for requests in flight."""


@dataclass(frozen=True)
class Claims:
    raw: Mapping[str, Any]

    @property
    def aud(self) -> str | None:
        aud = self.raw.get("aud")
        return aud if isinstance(aud, str) else None

    @property
    def sub(self) -> str | None:
        sub = self.raw.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def scopes(self) -> frozenset[str]:
        scope = self.raw.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else frozenset()

    @property
    def jti(self) -> str | None:
        jti = self.raw.get("jti")
        return jti if isinstance(jti, str) and jti else None

    @property
    def iat(self) -> float:
        return float(self.raw["iat"])

    @property
    def exp(self) -> float:
        return float(self.raw["exp"])


class TokenIssuer:
    """Mints and verifies tokens with one key store and one callback token ledger (both in
    the database); `clock` is injectable for tests."""

    def __init__(
        self,
        keys: KeyStore,
        ledger: CallbackLedger,
        issuer: str,
        *,
        callback_ttl_s: int,
        viewer_ttl_s: int,
        user_ttl_s: int,
        revoke_grace_s: float = 120.0,
        clock: Clock = time.time,
    ) -> None:
        self.keys = keys
        self.ledger = ledger
        self.issuer = issuer
        self.callback_ttl_s = callback_ttl_s
        self.viewer_ttl_s = viewer_ttl_s
        self.user_ttl_s = user_ttl_s
        self.revoke_grace_s = revoke_grace_s
        self.max_ttl_s = max(callback_ttl_s, viewer_ttl_s, user_ttl_s)
        self.clock = clock

    @classmethod
    def from_settings(
        cls, settings: ControlPlaneSettings, engine: Engine, *, clock: Clock = time.time
    ) -> TokenIssuer:
        """The issuer of the control plane whose (migrated) database `engine` opens."""
        keys = KeyStore.open(
            engine,
            retention_s=settings.max_token_ttl_s,
            clock=clock,
            activation_delay_s=settings.key_activation_delay_s,
            cache_s=settings.key_cache_s,
            legacy_dir=settings.state_dir,
        )
        return cls(
            keys,
            CallbackLedger(engine),
            settings.public_url,
            callback_ttl_s=settings.callback_token_ttl_s,
            viewer_ttl_s=settings.viewer_token_ttl_s,
            user_ttl_s=settings.user_token_ttl_s,
            revoke_grace_s=settings.callback_token_revoke_grace_s,
            clock=clock,
        )

    def with_clock(self, clock: Clock) -> TokenIssuer:
        """The same keys, ledger and issuer, another clock (tests mint expired tokens so)."""
        return TokenIssuer(
            self.keys,
            self.ledger,
            self.issuer,
            callback_ttl_s=self.callback_ttl_s,
            viewer_ttl_s=self.viewer_ttl_s,
            user_ttl_s=self.user_ttl_s,
            revoke_grace_s=self.revoke_grace_s,
            clock=clock,
        )

    def _mint(self, claims: dict[str, Any], ttl_s: int) -> tuple[str, dict[str, Any]]:
        # Keys are kept published for max_ttl_s after they stop signing; a longer-lived
        # token would outlive its key in the JWKS.
        if not 0 < ttl_s <= self.max_ttl_s:
            raise ValueError(f"ttl_s must be in (0, {self.max_ttl_s}], got {ttl_s}")
        now = int(self.clock())
        key = self.keys.signing_key()
        body = {"iss": self.issuer, "iat": now, "exp": now + ttl_s, "jti": uuid.uuid4().hex}
        body.update(claims)
        token = jwt.encode(body, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, body

    def _callback_claims(self, node_id: str, ttl_s: int | None) -> tuple[str, LedgerEntry]:
        claims = {"sub": node_id, "scope": CALLBACK_SCOPE, "aud": CALLBACK_AUDIENCE}
        token, body = self._mint(claims, ttl_s or self.callback_ttl_s)
        return token, LedgerEntry(body["jti"], node_id, body["iat"], body["exp"])

    def mint_callback_token(self, node_id: str, ttl_s: int | None = None) -> str:
        """A node's callback token, recorded in the ledger. Every callback token is minted
        here (bootstrap, `python -m control_plane mint`, dev): one without a ledger row is
        refused."""
        token, entry = self._callback_claims(node_id, ttl_s)
        self.ledger.record(entry)
        return token

    def refresh_callback_token(self, claims: Claims) -> str:
        """A new callback token for the node `claims` (a verified callback token) names;
        the old one is refused once `revoke_grace_s` has passed."""
        if claims.sub is None or claims.jti is None:
            raise TokenInvalidError("not a callback token of ours")
        token, entry = self._callback_claims(claims.sub, None)
        now = self.clock()
        self.ledger.replace(
            claims.jti, replace(entry, replaces=claims.jti), now + self.revoke_grace_s, now
        )
        return token

    def check_callback(self, claims: Claims) -> None:
        """The ledger's word on a verified callback token: TokenRevokedError once replaced
        and past the grace, TokenInvalidError if it was never recorded.

        A token minted before the ledger began (by an older control plane, whose keys
        were imported) has no row: it is recorded at first sight, so that a refresh can
        revoke it. That window closes when the longest token lifetime has passed."""
        jti, node_id = claims.jti, claims.sub
        if jti is None or node_id is None:
            raise TokenInvalidError("callback token without jti or sub")
        entry = self.ledger.get(jti)
        if entry is None:
            since = self.ledger.since()
            # `iat` is whole seconds: the token's whole second lies before the import.
            legacy = (
                since is not None
                and claims.iat + 1 <= since
                and claims.exp <= since + self.max_ttl_s
            )
            if not legacy:
                raise TokenInvalidError("callback token not in the ledger")
            entry = LedgerEntry(jti, node_id, claims.iat, claims.exp)
            self.ledger.record_seen(entry)
        if entry.node_id != node_id:
            raise TokenInvalidError("callback token ledger names another node")
        if entry.revoked(self.clock()):
            raise TokenRevokedError("callback token was replaced by a refresh")

    def mint_viewer_token(
        self,
        node_id: str,
        scopes: list[str],
        ttl_s: int | None = None,
        subject: str = "dev-viewer",
    ) -> str:
        unknown = set(scopes) - VIEWER_SCOPES
        if unknown or not scopes:
            raise ValueError(f"viewer scopes must be among {sorted(VIEWER_SCOPES)}: {scopes}")
        claims = {"aud": VIEWER_AUDIENCE, "node": node_id, "scope": " ".join(scopes)}
        claims["sub"] = subject
        return self._mint(claims, ttl_s or self.viewer_ttl_s)[0]

    def mint_user_token(
        self, user_id: str, *, admin: bool = False, ttl_s: int | None = None
    ) -> str:
        scope = f"{USER_SCOPE} {ADMIN_SCOPE}" if admin else USER_SCOPE
        claims = {"sub": user_id, "scope": scope, "aud": USER_AUDIENCE}
        return self._mint(claims, ttl_s or self.user_ttl_s)[0]

    def verify(self, token: str) -> Claims:
        """Check signature (pinned EdDSA, published kid), issuer and expiry.

        Audience and scope are the caller's to check, so that a genuine token of the
        wrong kind can be told apart (403) from one we did not mint (401).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalidError("malformed token") from exc
        kid = header.get("kid")
        key = self.keys.find(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalidError("unknown signing key")
        try:
            raw = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                # exp is checked below against our clock; aud by the caller.
                options={
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "iat", "exp"],
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalidError(str(exc)) from exc
        claims = Claims(raw)
        try:
            exp = claims.exp
            _ = claims.iat
        except (TypeError, ValueError) as exc:
            raise TokenInvalidError("bad iat/exp") from exc
        if self.clock() >= exp:
            raise TokenExpiredError("token expired")
        return claims

    def needs_refresh(self, claims: Claims) -> bool:
        """True once a token is past half its life."""
        return self.clock() >= claims.iat + (claims.exp - claims.iat) / 2


@dataclass(frozen=True)
class DevTokens:
    callback_token: str
    viewer_token: str
    admin_token: str
    jwks_url: str
    # the person at the keyboard: submits and follows tasks (`vm-agent task`)
    user_token: str = ""


DEV_USER = "dev-user"


def mint_dev_tokens(
    settings: ControlPlaneSettings, node_id: str, *, viewer_scopes: list[str] | None = None
) -> DevTokens:
    """Tokens for `vm-agent dev`: minted with the keys (and into the ledger) of the
    control plane's database that `settings` name."""
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.database_url or sqlite_url(settings.state_dir))
    try:
        upgrade(engine)
        issuer = TokenIssuer.from_settings(settings, engine)
        return DevTokens(
            callback_token=issuer.mint_callback_token(node_id),
            viewer_token=issuer.mint_viewer_token(node_id, viewer_scopes or ["read", "write"]),
            admin_token=issuer.mint_user_token("dev-admin", admin=True),
            user_token=issuer.mint_user_token(DEV_USER),
            jwks_url=jwks_url(settings.public_url),
        )
    finally:
        engine.dispose()


def jwks_url(public_url: str) -> str:
    return public_url.rstrip("/") + "/.well-known/jwks.json"
