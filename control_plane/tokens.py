"""Minting and verifying the control plane's JWTs (EdDSA, `kid` in the header).

Three kinds:
- callback token: aud "control-plane", scope "node-callback", sub = node id (the VM's);
- viewer token: aud "vm-agent", node = node id, scope "read" / "read write" (the daemon's),
  or "node" for the control plane's own connection to a node (every session on it);
- user token: aud "control-plane", scope "user" or "user admin", sub = user id
  (task submission, GitHub links; "admin" also reads stored node events).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from control_plane.keys import ALGORITHM, Clock, KeyStore
from control_plane.settings import ControlPlaneSettings

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
    def iat(self) -> float:
        return float(self.raw["iat"])

    @property
    def exp(self) -> float:
        return float(self.raw["exp"])


class TokenIssuer:
    """Mints and verifies tokens with one key store; `clock` is injectable for tests."""

    def __init__(
        self,
        keys: KeyStore,
        issuer: str,
        *,
        callback_ttl_s: int,
        viewer_ttl_s: int,
        user_ttl_s: int,
        clock: Clock = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.callback_ttl_s = callback_ttl_s
        self.viewer_ttl_s = viewer_ttl_s
        self.user_ttl_s = user_ttl_s
        self.max_ttl_s = max(callback_ttl_s, viewer_ttl_s, user_ttl_s)
        self.clock = clock

    @classmethod
    def from_settings(
        cls, settings: ControlPlaneSettings, *, clock: Clock = time.time
    ) -> TokenIssuer:
        keys = KeyStore.open(
            settings.state_dir,
            retention_s=settings.max_token_ttl_s,
            clock=clock,
            activation_delay_s=settings.key_activation_delay_s,
        )
        return cls(
            keys,
            settings.public_url,
            callback_ttl_s=settings.callback_token_ttl_s,
            viewer_ttl_s=settings.viewer_token_ttl_s,
            user_ttl_s=settings.user_token_ttl_s,
            clock=clock,
        )

    def with_clock(self, clock: Clock) -> TokenIssuer:
        """The same keys and issuer, another clock (tests mint expired tokens this way)."""
        return TokenIssuer(
            self.keys,
            self.issuer,
            callback_ttl_s=self.callback_ttl_s,
            viewer_ttl_s=self.viewer_ttl_s,
            user_ttl_s=self.user_ttl_s,
            clock=clock,
        )

    def _mint(self, claims: dict[str, Any], ttl_s: int) -> str:
        # Keys are kept published for max_ttl_s after they stop signing; a longer-lived
        # token would outlive its key in the JWKS.
        if not 0 < ttl_s <= self.max_ttl_s:
            raise ValueError(f"ttl_s must be in (0, {self.max_ttl_s}], got {ttl_s}")
        now = int(self.clock())
        key = self.keys.signing_key()
        body = {"iss": self.issuer, "iat": now, "exp": now + ttl_s, "jti": uuid.uuid4().hex}
        body.update(claims)
        return jwt.encode(body, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def mint_callback_token(self, node_id: str, ttl_s: int | None = None) -> str:
        claims = {"sub": node_id, "scope": CALLBACK_SCOPE, "aud": CALLBACK_AUDIENCE}
        return self._mint(claims, ttl_s or self.callback_ttl_s)

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
        return self._mint(claims, ttl_s or self.viewer_ttl_s)

    def mint_user_token(
        self, user_id: str, *, admin: bool = False, ttl_s: int | None = None
    ) -> str:
        scope = f"{USER_SCOPE} {ADMIN_SCOPE}" if admin else USER_SCOPE
        claims = {"sub": user_id, "scope": scope, "aud": USER_AUDIENCE}
        return self._mint(claims, ttl_s or self.user_ttl_s)

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


def mint_dev_tokens(
    settings: ControlPlaneSettings, node_id: str, *, viewer_scopes: list[str] | None = None
) -> DevTokens:
    """Tokens for `vm-agent dev`: minted with the keys under settings.state_dir."""
    issuer = TokenIssuer.from_settings(settings)
    return DevTokens(
        callback_token=issuer.mint_callback_token(node_id),
        viewer_token=issuer.mint_viewer_token(node_id, viewer_scopes or ["read", "write"]),
        admin_token=issuer.mint_user_token("dev-admin", admin=True),
        jwks_url=jwks_url(settings.public_url),
    )


def jwks_url(public_url: str) -> str:
    return public_url.rstrip("/") + "/.well-known/jwks.json"
