"""Provider credentials: sealed at rest, write-only through the API, opened only to call."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from control_plane.identity.sealing import KeyFileError, Sealer, SealError, load_key_file
from control_plane.providers import credentials
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import provider_credentials
from tests.control_plane.harness import running

TOKEN = "hcloud-" + "Zq9" * 20
KEY, OTHER = os.urandom(32), os.urandom(32)


def test_sealing_round_trip_and_refusals() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(b"secret", "row:a")
    assert b"secret" not in sealed
    assert sealer.open(sealed, "row:a") == b"secret"
    assert sealer.seal(b"secret", "row:a") != sealed  # a fresh nonce each time
    with pytest.raises(SealError, match="moved"):
        sealer.open(sealed, "row:b")  # copied into another row: does not open
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealError):
        sealer.open(tampered, "row:a")
    with pytest.raises(SealError, match="does not have"):
        Sealer(OTHER).open(sealed, "row:a")
    with pytest.raises(SealError):
        sealer.open(b"plaintext", "row:a")
    # a rotation: the new key seals, the old one still opens what it sealed
    rotated = Sealer(OTHER, KEY)
    assert rotated.open(sealed, "row:a") == b"secret"
    assert Sealer(OTHER).open(rotated.seal(b"x", "w"), "w") == b"x"


def test_key_file_made_private_and_refused_when_others_may_read(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secrets.key"
    key = load_key_file(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 32
    assert load_key_file(path, create=True) == key  # made once, kept
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_key_file(path, create=False)
    bad = tmp_path / "bad.key"
    bad.write_text(base64.b64encode(b"short").decode())
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="32 bytes"):
        load_key_file(bad, create=False)
    with pytest.raises(KeyFileError):
        load_key_file(tmp_path / "missing.key", create=False)


@pytest.mark.anyio
@pytest.mark.integration
async def test_credentials_are_write_only_and_sealed_at_rest(
    settings: ControlPlaneSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(settings) as cp:
        url = "/api/providers/hetzner/credentials"
        r = await cp.client.put(url, json={"token": TOKEN}, headers=cp.user("alice"))
        assert r.status_code == 204, r.text
        r = await cp.client.get(url, headers=cp.user("alice"))
        assert r.json()["configured"] is True and TOKEN not in r.text
        r = await cp.client.get(url, headers=cp.user("bob"))
        assert r.json()["configured"] is False  # bob has none; alice's is not his
        with cp.plane.engine.connect() as conn:
            rows = conn.execute(select(provider_credentials)).mappings().all()
        assert len(rows) == 1 and TOKEN not in str(dict(rows[0]))
        opened = credentials.credential_for(cp.plane.engine, cp.plane.sealer, "alice", "hetzner")
        assert opened == TOKEN
        assert (
            credentials.credential_for(cp.plane.engine, cp.plane.sealer, "bob", "hetzner") is None
        )
        # refused: no token, an unknown provider, an unknown field, no user token
        bad = [
            await cp.client.put(url, json={}, headers=cp.user("alice")),
            await cp.client.put(url, json={"token": ""}, headers=cp.user("alice")),
            await cp.client.put(url, json={"token": TOKEN, "x": 1}, headers=cp.user("alice")),
            await cp.client.put(
                "/api/providers/nope/credentials", json={"token": TOKEN}, headers=cp.user("alice")
            ),
            await cp.client.put(url, json={"token": TOKEN}),
            # the operator's own machine: no user's credential opens it, none is kept
            await cp.client.put(
                "/api/providers/qemu/credentials", json={"token": TOKEN}, headers=cp.user("alice")
            ),
        ]
        assert [b.status_code for b in bad] == [422, 422, 422, 404, 401, 422]
        assert "no credential" in bad[-1].json()["error"]
        assert credentials.credential_for(cp.plane.engine, cp.plane.sealer, "alice", "qemu") is None
        assert all(TOKEN not in b.text for b in bad)
        assert (await cp.client.delete(url, headers=cp.user("bob"))).status_code == 404
        assert (await cp.client.delete(url, headers=cp.user("alice"))).status_code == 204
        assert (
            credentials.credential_for(cp.plane.engine, cp.plane.sealer, "alice", "hetzner") is None
        )
    assert TOKEN not in caplog.text
