"""Signing keys (in the database, shared by replicas), tokens, rotation, expiry, and the
callback token ledger (every jti recorded; a refresh revokes the old one after a grace)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from control_plane.identity.keys import KEYS_FILENAME, KeyStore, SigningKey
from control_plane.identity.ledger import LedgerEntry
from control_plane.identity.tokens import (
    Claims,
    TokenExpiredError,
    TokenInvalidError,
    TokenRevokedError,
    mint_dev_tokens,
)
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import callback_tokens, signing_keys
from tests.clock import FakeClock
from tests.control_plane.harness import foreign_plane


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def plane(settings: ControlPlaneSettings, clock: FakeClock) -> Iterator[ControlPlane]:
    opened = ControlPlane.open(settings, clock=clock)
    yield opened
    opened.close()


def test_keys_live_in_the_database_and_every_replica_uses_them(
    settings: ControlPlaneSettings, plane: ControlPlane, clock: FakeClock
) -> None:
    with plane.engine.connect() as conn:
        (kid,) = conn.execute(select(signing_keys.c.kid)).scalars().all()
    assert plane.tokens.keys.signing_key().kid == kid
    assert not (settings.state_dir / KEYS_FILENAME).exists()
    # A second replica on the same database: other state directory, same keys.
    other = ControlPlane.open(
        settings.model_copy(update={"state_dir": settings.state_dir.parent / "replica-2"}),
        clock=clock,
    )
    try:
        assert other.tokens.keys.signing_key().kid == kid
        assert other.tokens.verify(plane.tokens.mint_user_token("u")).sub == "u"
        assert plane.tokens.verify(other.tokens.mint_user_token("v")).sub == "v"
    finally:
        other.close()


def test_a_legacy_keys_file_is_imported_then_removed(
    settings: ControlPlaneSettings, clock: FakeClock
) -> None:
    legacy = SigningKey.generate(clock.now - 100, clock.now - 100)
    settings.state_dir.mkdir(parents=True)
    path = settings.state_dir / KEYS_FILENAME
    path.write_text(json.dumps({"keys": [legacy.to_json()]}))
    old_token = jwt.encode(
        {"iss": settings.public_url, "sub": "u", "iat": int(clock.now), "exp": int(clock.now) + 60},
        legacy.private_key,
        algorithm="EdDSA",
        headers={"kid": legacy.kid},
    )
    plane = ControlPlane.open(settings, clock=clock)
    try:
        assert not path.exists()
        assert plane.tokens.keys.signing_key().kid == legacy.kid  # no new key was needed
        assert plane.tokens.verify(old_token).sub == "u"
    finally:
        plane.close()


def test_callback_and_viewer_claims(settings: ControlPlaneSettings, plane: ControlPlane) -> None:
    tokens = plane.tokens
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
    settings: ControlPlaneSettings, plane: ControlPlane
) -> None:
    token = plane.tokens.mint_viewer_token("node-9", ["read"])
    jwks = jwt.PyJWKSet.from_dict(plane.tokens.keys.jwks())
    key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(
        token, key, algorithms=["EdDSA"], audience="vm-agent", issuer=settings.public_url
    )
    assert claims["node"] == "node-9"


def test_expired_and_foreign_tokens(
    settings: ControlPlaneSettings, plane: ControlPlane, clock: FakeClock, tmp_path: Path
) -> None:
    tokens = plane.tokens
    token = tokens.mint_callback_token("n", ttl_s=10)
    clock.advance(10)
    with pytest.raises(TokenExpiredError):
        tokens.verify(token)
    with foreign_plane(tmp_path, settings) as other, pytest.raises(TokenInvalidError):
        tokens.verify(other.tokens.mint_callback_token("n"))
    with pytest.raises(TokenInvalidError):
        tokens.verify("not-a-jwt")
    with pytest.raises(ValueError, match="ttl_s"):
        tokens.mint_callback_token("n", ttl_s=settings.max_token_ttl_s + 1)


def test_refresh_past_half_life(plane: ControlPlane, clock: FakeClock) -> None:
    tokens = plane.tokens
    claims = tokens.verify(tokens.mint_callback_token("n", ttl_s=100))
    assert not tokens.needs_refresh(claims)
    clock.advance(49)
    assert not tokens.needs_refresh(claims)
    clock.advance(2)
    assert tokens.needs_refresh(claims)


def test_rotation_publishes_before_signing_and_keeps_old_key_until_expiry(
    settings: ControlPlaneSettings, plane: ControlPlane, clock: FakeClock
) -> None:
    tokens = plane.tokens
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
    # The rotated state is in the database; pruning happens at the next rotation.
    reloaded = KeyStore.open(plane.engine, retention_s=settings.max_token_ttl_s, clock=clock)
    assert reloaded.signing_key().kid == new.kid
    tokens.keys.rotate()
    with plane.engine.connect() as conn:
        stored = set(conn.execute(select(signing_keys.c.kid)).scalars())
    assert old.kid not in stored and new.kid in stored


def test_a_key_rotated_through_one_replica_is_honoured_by_the_other(
    settings: ControlPlaneSettings, plane: ControlPlane, clock: FakeClock
) -> None:
    other = ControlPlane.open(
        settings.model_copy(update={"state_dir": settings.state_dir.parent / "replica-2"}),
        clock=clock,
    )
    try:
        new = plane.tokens.keys.rotate(activate_after_s=0)
        token = plane.tokens.mint_viewer_token("n1", ["read"])
        assert jwt.get_unverified_header(token)["kid"] == new.kid
        # The other replica has not seen the key yet: it looks it up at once.
        assert other.tokens.verify(token).raw["node"] == "n1"
        assert new.kid in {k["kid"] for k in other.tokens.keys.jwks()["keys"]}
        assert other.tokens.keys.signing_key().kid == new.kid
    finally:
        other.close()


def test_jwk_fields(plane: ControlPlane) -> None:
    (jwk,) = plane.tokens.keys.jwks()["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "alg", "use")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "d" not in jwk  # never the private part


def test_mint_dev_tokens(settings: ControlPlaneSettings, plane: ControlPlane) -> None:
    dev = mint_dev_tokens(settings, "dev-node")
    assert dev.jwks_url == "http://127.0.0.1:1/.well-known/jwks.json"
    tokens = plane.tokens
    callback = tokens.verify(dev.callback_token)
    assert callback.sub == "dev-node"
    tokens.check_callback(callback)  # recorded in the ledger
    assert tokens.verify(dev.viewer_token).raw["node"] == "dev-node"
    assert "admin" in tokens.verify(dev.admin_token).scopes


def test_rotation_defaults_to_the_configured_activation_delay(
    settings: ControlPlaneSettings, clock: FakeClock
) -> None:
    delayed = settings.model_copy(update={"key_activation_delay_s": 90.0})
    plane = ControlPlane.open(delayed, clock=clock)
    try:
        keys = plane.tokens.keys
        old = keys.signing_key()
        new = keys.rotate()
        assert new.not_before == clock.now + 90
        assert keys.signing_key().kid == old.kid
        clock.advance(90)
        assert keys.signing_key().kid == new.kid
    finally:
        plane.close()


# The callback token ledger.


def ledger_rows(plane: ControlPlane) -> dict[str, dict[str, object]]:
    with plane.engine.connect() as conn:
        rows = conn.execute(select(callback_tokens)).mappings().all()
    return {str(r["jti"]): dict(r) for r in rows}


def test_every_minted_callback_token_is_recorded_by_jti(plane: ControlPlane) -> None:
    tokens = plane.tokens
    first = tokens.verify(tokens.mint_callback_token("n1"))
    second = tokens.verify(tokens.with_clock(lambda: first.iat - 50).mint_callback_token("n2"))
    rows = ledger_rows(plane)
    assert set(rows) == {first.jti, second.jti}
    assert rows[str(first.jti)]["node_id"] == "n1"
    assert (rows[str(second.jti)]["issued_at"], rows[str(second.jti)]["expires_at"]) == (
        second.iat,
        second.exp,
    )
    assert rows[str(first.jti)]["revoked_at"] is None
    tokens.check_callback(first)
    tokens.check_callback(second)


def test_a_refresh_revokes_the_old_token_after_the_grace(
    plane: ControlPlane, clock: FakeClock
) -> None:
    tokens = plane.tokens
    grace = tokens.revoke_grace_s
    old = tokens.verify(tokens.mint_callback_token("n1"))
    fresh = tokens.verify(tokens.refresh_callback_token(old))
    assert fresh.sub == "n1" and fresh.jti != old.jti
    assert ledger_rows(plane)[str(fresh.jti)]["replaces"] == old.jti
    # Within the grace both pass (requests in flight with the old one).
    clock.advance(grace - 1)
    tokens.check_callback(old)
    tokens.check_callback(fresh)
    # A second refresh of the old token (its answer was lost) does not extend its life.
    again = tokens.verify(tokens.refresh_callback_token(old))
    clock.advance(1)
    with pytest.raises(TokenRevokedError):
        tokens.check_callback(old)
    tokens.check_callback(fresh)
    tokens.check_callback(again)


def test_a_callback_token_the_ledger_never_saw_is_refused(
    plane: ControlPlane, clock: FakeClock
) -> None:
    tokens = plane.tokens
    assert tokens.ledger.since() is None  # no keys of an older control plane were imported
    now = int(clock.now)
    body = {"sub": "n1", "scope": "node-callback", "aud": "control-plane", "iss": tokens.issuer}
    # Signed with our own key but never recorded (minted around the bookkeeping), also
    # one that claims to be old.
    for iat in (now, now - 3600):
        unrecorded = Claims({**body, "jti": f"made-up-{iat}", "iat": iat, "exp": iat + 100})
        with pytest.raises(TokenInvalidError, match="not in the ledger"):
            tokens.check_callback(unrecorded)
    with pytest.raises(TokenInvalidError):
        tokens.check_callback(Claims({**body, "iat": now, "exp": now + 100}))  # no jti
    # Recorded for one node, presented as another's.
    other = tokens.verify(tokens.mint_callback_token("n2"))
    with pytest.raises(TokenInvalidError, match="another node"):
        tokens.check_callback(Claims({**other.raw, "sub": "n1"}))


def test_tokens_signed_by_imported_keys_before_the_import_are_recorded_at_first_sight(
    settings: ControlPlaneSettings, clock: FakeClock
) -> None:
    settings.state_dir.mkdir(parents=True)
    legacy_key = SigningKey.generate(clock.now - 1000, clock.now - 1000)
    (settings.state_dir / KEYS_FILENAME).write_text(json.dumps({"keys": [legacy_key.to_json()]}))
    plane = ControlPlane.open(settings, clock=clock)
    try:
        tokens = plane.tokens
        since = tokens.ledger.since()
        assert since == clock.now
        body = {"sub": "n1", "scope": "node-callback", "aud": "control-plane"}
        iat = int(since) - 10
        legacy = Claims({**body, "jti": "legacy-1", "iat": iat, "exp": iat + 600})
        tokens.check_callback(legacy)
        assert ledger_rows(plane)["legacy-1"]["node_id"] == "n1"
        tokens.check_callback(legacy)  # seen again: the row is there
        # It can be revoked like any other.
        tokens.refresh_callback_token(legacy)
        clock.advance(tokens.revoke_grace_s)
        with pytest.raises(TokenRevokedError):
            tokens.check_callback(legacy)
        # One that claims to outlive every token an older control plane could mint, or to
        # be minted after the import: refused.
        for jti, issued, exp in (
            ("l-2", iat, int(since) + 10**6),
            ("l-3", int(since), int(since) + 60),
        ):
            with pytest.raises(TokenInvalidError):
                tokens.check_callback(Claims({**body, "jti": jti, "iat": issued, "exp": exp}))
    finally:
        plane.close()


def test_ledger_rows_of_expired_tokens_are_dropped_at_a_refresh(
    plane: ControlPlane, clock: FakeClock
) -> None:
    tokens = plane.tokens
    short = tokens.verify(tokens.mint_callback_token("n1", ttl_s=10))
    plane.tokens.ledger.record(LedgerEntry("other-node", "n2", clock.now, clock.now + 5))
    clock.advance(20)
    current = tokens.verify(tokens.mint_callback_token("n1"))
    tokens.refresh_callback_token(current)
    rows = ledger_rows(plane)
    assert short.jti not in rows  # expired, same node
    assert "other-node" in rows  # another node's rows wait for that node's refresh
