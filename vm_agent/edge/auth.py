"""Viewer tokens: JWTs from the control plane, verified against its JWKS.

Only pinned asymmetric algorithms are accepted, and the header's `alg` is
checked before any key is touched (no `none`, no HS* signed with a public key).
The JWKS is cached and refetched when a token names an unknown `kid`, at most
once per `min_refetch_interval_s` (concurrent verifies share one fetch), so a
storm of forged kids cannot hammer the control plane.

`Unauthorized` carries the precise reason for the log; a client is only ever
told "unauthorized".
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import jwt

log = logging.getLogger(__name__)

# Algorithms a verifier may be pinned to: public-key signatures only.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
READ_SCOPE = "read"
WRITE_SCOPE = "write"
# The control plane's own connection: every session of the node (docs/viewer-api.md).
NODE_SCOPE = "node"
VIEWER_SCOPES = frozenset({READ_SCOPE, WRITE_SCOPE, NODE_SCOPE})
MAX_TOKEN_CHARS = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024
# A cached JWKS older than this is refetched on the next verify (subject to the
# floor), so a key the control plane stopped publishing stops being trusted.
MAX_CACHE_AGE_S = 600.0
_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class Unauthorized(Exception):
    """A token was refused; `str(exc)` is the reason, for the log only."""


@dataclass(frozen=True)
class ViewerIdentity:
    subject: str
    scopes: frozenset[str]
    token_id: str | None
    expires_at: float

    @property
    def can_read(self) -> bool:
        return bool(self.scopes & VIEWER_SCOPES)

    @property
    def can_write(self) -> bool:
        return WRITE_SCOPE in self.scopes or NODE_SCOPE in self.scopes

    @property
    def is_node(self) -> bool:
        return NODE_SCOPE in self.scopes


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"claim {name!r} is not a number")
    return float(value)


class JwksVerifier:
    """Verifies viewer tokens for one node; `aclose()` closes its own HTTP client."""

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        node_id: str,
        audience: str = "vm-agent",
        algorithms: tuple[str, ...] = ("EdDSA", "ES256"),
        leeway_s: float = 30.0,
        min_refetch_interval_s: float = 30.0,
        http: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"algorithms must be asymmetric ones, got {list(algorithms)}")
        if not node_id:
            raise ValueError("node_id must not be empty")
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.node_id = node_id
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.leeway_s = leeway_s
        self.min_refetch_interval_s = min_refetch_interval_s
        self._own_http = http is None
        self._http = (
            http if http is not None else httpx.AsyncClient(timeout=_TIMEOUT, verify=verify)
        )
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._lock = anyio.Lock()
        self._last_attempt: float | None = None
        self._fetched_at: float | None = None  # last successful fetch
        self._last_error: str | None = None
        self._generation = 0  # fetch attempts completed; lets waiters skip a fetch
        self.fetch_count = 0

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def verify(self, token: str) -> ViewerIdentity:
        """The identity a token carries; raises Unauthorized with the reason."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("empty token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        alg = header.get("alg")
        # Before any key is looked at: this is what stops `none` and HS*-with-a-public-key.
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized(f"algorithm {alg!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token has no kid")
        key = await self._key(kid)
        if key.algorithm_name != alg:
            raise Unauthorized(f"kid {kid!r} is a {key.algorithm_name} key, token says {alg}")
        claims = self._decode(token, key, alg)
        return self._identity(claims)

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                # Time claims are checked below against our injectable clock.
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise Unauthorized("bad signature") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"missing claim {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return claims

    def _identity(self, claims: dict[str, Any]) -> ViewerIdentity:
        now = self._clock()
        exp = _number(claims, "exp")
        assert exp is not None  # required above
        if now > exp + self.leeway_s:
            raise Unauthorized(f"token expired {now - exp:.0f}s ago")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self.leeway_s:
            raise Unauthorized(f"token issued {iat - now:.0f}s in the future")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway_s:
            raise Unauthorized(f"token not valid for another {nbf - now:.0f}s")
        node = claims.get("node")
        if node != self.node_id:
            raise Unauthorized(f"token is for node {node!r}, this is {self.node_id!r}")
        scope = claims.get("scope")
        if not isinstance(scope, str):
            raise Unauthorized("token has no scope")
        scopes = frozenset(scope.split()) & VIEWER_SCOPES
        if not scopes:
            raise Unauthorized(f"token has no viewer scope (scope {scope[:64]!r})")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("token has no subject")
        jti = claims.get("jti")
        return ViewerIdentity(
            subject=sub,
            scopes=scopes,
            token_id=jti if isinstance(jti, str) else None,
            expires_at=exp,
        )

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            if not self._stale():
                return key
            # A failed refresh keeps the cached keys: the control plane being down
            # must not lock every viewer out.
            await self._refresh()
            key = self._keys.get(kid)
            if key is None:
                raise Unauthorized(f"kid {kid!r} is no longer in the JWKS")
            return key
        fetched = await self._refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not fetched:
            raise Unauthorized(
                f"unknown kid {kid!r} (JWKS not refetched: last attempt under "
                f"{self.min_refetch_interval_s:g}s ago"
                + (f", it failed: {self._last_error})" if self._last_error else ")")
            )
        if self._last_error:
            raise Unauthorized(f"unknown kid {kid!r}: JWKS fetch failed: {self._last_error}")
        raise Unauthorized(f"unknown kid {kid!r}: not in the JWKS")

    def _stale(self) -> bool:
        fetched = self._fetched_at
        if fetched is None:
            return True
        age = self._clock() - fetched
        return age < 0 or age > MAX_CACHE_AGE_S

    async def _refresh(self) -> bool:
        """Fetch the JWKS unless one was attempted within the floor; True if one ran
        (here or in a concurrent verify this one waited for)."""
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return True  # a concurrent verify fetched while we waited
            now = self._clock()
            last = self._last_attempt
            # A clock that went back counts as "long ago".
            if last is not None and 0 <= now - last < self.min_refetch_interval_s:
                return False
            self._last_attempt = now
            try:
                self._keys = await self._fetch()
                self._fetched_at = now
                self._last_error = None
            except _FetchError as exc:
                self._last_error = str(exc)
                log.warning("JWKS fetch from %s failed: %s", self.jwks_url, exc)
            finally:
                self._generation += 1
            return True

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        self.fetch_count += 1
        try:
            response = await self._http.get(self.jwks_url, timeout=_TIMEOUT)
        except httpx.HTTPError as exc:
            raise _FetchError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise _FetchError(f"HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise _FetchError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        try:
            doc = response.json()
        except ValueError:
            raise _FetchError("JWKS is not JSON") from None
        entries = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise _FetchError("JWKS has no 'keys' list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            key = self._parse_key(entry)
            if key is not None:
                keys[entry["kid"]] = key
        log.info("JWKS fetched from %s: %d usable keys", self.jwks_url, len(keys))
        return keys

    def _parse_key(self, entry: object) -> jwt.PyJWK | None:
        if not isinstance(entry, dict):
            return None
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            return None
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.info("JWKS key %r skipped: %s", kid, exc)
            return None
        if key.algorithm_name not in self.algorithms:
            log.info("JWKS key %r skipped: algorithm %s not allowed", kid, key.algorithm_name)
            return None
        return key


class _FetchError(Exception):
    pass
