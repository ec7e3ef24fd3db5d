"""Signing keys and tokens: file modes, claims, rotation, expiry."""

from __future__ import annotations

import json
import stat
import time

import jwt
import pytest

from control_plane.keys import KEYS_FILENAME, KeyStore
from control_plane.settings import ControlPlaneSettings
from control_plane.tokens import (
    TokenExpiredError,
    TokenInvalidError,
    TokenIssuer,
    mint_dev_tokens,
)
from tests.clock import FakeClock


def issuer(settings: ControlPlaneSettings, clock: FakeClock) -> TokenIssuer:
    return TokenIssuer.from_settings(settings, clock=clock)


def test_keys_file_is_private_and_reloaded(settings: ControlPlaneSettings) -> None:
    clock = FakeClock(time.time())
    first = issuer(settings, clock)
    path = settings.state_dir / KEYS_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = issuer(settings, clock)
    assert again.keys.signing_key().kid == first.keys.signing_key().kid


def test_callback_and_viewer_claims(settings: ControlPlaneSettings) -> None:
    clock = FakeClock(time.time())
    tokens = issuer(settings, clock)
    cb = tokens.mint_callback_token("node-1")
    header = jwt.get_unverified_header(cb)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == tokens.keys.signing_key().kid
    claims = tokens.verify(cb).raw
    assert claims["iss"] == settings.public_url
    assert (claims["sub"], claims["scope"], claims["aud"]) == (
        "node-1",
        "node-callback",
        "control-plane",
    )
    assert claims["exp"] - claims["iat"] == settings.callback_token_ttl_s
    assert claims["jti"]

    viewer = tokens.verify(tokens.mint_viewer_token("node-1", ["read", "write"], subject="u1")).raw
    assert (viewer["aud"], viewer["node"], viewer["scope"], viewer["sub"]) == (
        "vm-agent",
        "node-1",
        "read write",
        "u1",
    )
    with pytest.raises(ValueError, match="scopes"):
        tokens.mint_viewer_token("node-1", ["admin"])


def test_a_daemon_can_verify_viewer_tokens_with_the_jwks_alone(
    settings: ControlPlaneSettings,
) -> None:
    tokens = issuer(settings, FakeClock(time.time()))
    token = tokens.mint_viewer_token("node-9", ["read"])
    jwks = jwt.PyJWKSet.from_dict(tokens.keys.jwks())
    key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(
        token, key, algorithms=["EdDSA"], audience="vm-agent", issuer=settings.public_url
    )
    assert claims["node"] == "node-9"


def test_expired_and_foreign_tokens(settings: ControlPlaneSettings) -> None:
    clock = FakeClock(time.time())
    tokens = issuer(settings, clock)
    token = tokens.mint_callback_token("n", ttl_s=10)
    clock.advance(10)
    with pytest.raises(TokenExpiredError):
        tokens.verify(token)
    other = TokenIssuer.from_settings(
        settings.model_copy(update={"state_dir": settings.state_dir.parent / "other"}),
        clock=clock,
    )
    with pytest.raises(TokenInvalidError):
        tokens.verify(other.mint_callback_token("n"))
    with pytest.raises(TokenInvalidError):
        tokens.verify("not-a-jwt")
    with pytest.raises(ValueError, match="ttl_s"):
        tokens.mint_callback_token("n", ttl_s=settings.max_token_ttl_s + 1)


def test_refresh_past_half_life(settings: ControlPlaneSettings) -> None:
    clock = FakeClock(time.time())
    tokens = issuer(settings, clock)
    claims = tokens.verify(tokens.mint_callback_token("n", ttl_s=100))
    assert not tokens.needs_refresh(claims)
    clock.advance(49)
    assert not tokens.needs_refresh(claims)
    clock.advance(2)
    assert tokens.needs_refresh(claims)


def test_rotation_publishes_before_signing_and_keeps_old_key_until_expiry(
    settings: ControlPlaneSettings,
) -> None:
    clock = FakeClock(time.time())
    tokens = issuer(settings, clock)
    old = tokens.keys.signing_key()
    old_token = tokens.mint_callback_token("n")

    new = tokens.keys.rotate(activate_after_s=120)
    published = {k["kid"] for k in tokens.keys.jwks()["keys"]}
    assert published == {old.kid, new.kid}
    assert tokens.keys.signing_key().kid == old.kid  # published, not yet signing

    clock.advance(120)
    assert tokens.keys.signing_key().kid == new.kid
    assert jwt.get_unverified_header(tokens.mint_callback_token("n"))["kid"] == new.kid
    clock.advance(settings.max_token_ttl_s - 121)
    # The old key's last tokens may still be alive: it stays published and verifies.
    assert old.kid in {k["kid"] for k in tokens.keys.jwks()["keys"]}
    assert tokens.verify(old_token).sub == "n"
    clock.advance(2)
    with pytest.raises(TokenExpiredError):
        tokens.verify(old_token)

    # Retention: the longest token TTL (plus 60 s slack) after the new key began signing.
    clock.now = new.not_before + settings.max_token_ttl_s + 59
    assert old.kid in {k["kid"] for k in tokens.keys.jwks()["keys"]}
    clock.now += 1
    assert {k["kid"] for k in tokens.keys.jwks()["keys"]} == {new.kid}
    # The rotated state survives a reload; pruning happens at the next rotation.
    reloaded = KeyStore.open(settings.state_dir, retention_s=settings.max_token_ttl_s, clock=clock)
    assert reloaded.signing_key().kid == new.kid
    tokens.keys.rotate()
    on_disk = json.loads((settings.state_dir / KEYS_FILENAME).read_text())["keys"]
    assert old.kid not in {k["kid"] for k in on_disk}


def test_jwk_fields(settings: ControlPlaneSettings) -> None:
    tokens = issuer(settings, FakeClock(time.time()))
    (jwk,) = tokens.keys.jwks()["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "d" not in jwk  # never the private part


def test_mint_dev_tokens(settings: ControlPlaneSettings) -> None:
    dev = mint_dev_tokens(settings, "dev-node")
    assert dev.jwks_url == "http://127.0.0.1:1/.well-known/jwks.json"
    tokens = TokenIssuer.from_settings(settings)
    assert tokens.verify(dev.callback_token).sub == "dev-node"
    assert tokens.verify(dev.viewer_token).raw["node"] == "dev-node"
    assert "admin" in tokens.verify(dev.admin_token).scopes


def test_rotation_defaults_to_the_configured_activation_delay(
    settings: ControlPlaneSettings,
) -> None:
    clock = FakeClock(time.time())
    delayed = settings.model_copy(update={"key_activation_delay_s": 90.0})
    tokens = TokenIssuer.from_settings(delayed, clock=clock)
    old = tokens.keys.signing_key()
    new = tokens.keys.rotate()
    assert new.not_before == clock.now + 90
    assert tokens.keys.signing_key().kid == old.kid
    clock.advance(90)
    assert tokens.keys.signing_key().kid == new.kid
