"""The node CA in the database: one for every replica, made once, imported from the state
directory where an older version kept it, and tied to its node domain (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, func, select

from control_plane.identity.node_ca import CA_CERT, CA_DIR, CA_KEY, NodeCA, request_public_key
from control_plane.storage.db import make_engine, node_ca
from control_plane.storage.migrate import upgrade
from tests.provisioning.pki import csr_pem, handshake

DOMAIN = "nodes.test.internal"


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(node_ca)).scalar_one())


def write_legacy(state_dir: Path, ca: NodeCA, *, with_cert: bool = True) -> Path:
    """The files an older control plane kept: `node-ca/ca.key` (0600) and `ca.pem`."""
    directory = state_dir / CA_DIR
    directory.mkdir(parents=True, mode=0o700)
    # the old layout holds the key itself
    key = ca._key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / CA_KEY).write_bytes(key)
    (directory / CA_KEY).chmod(0o600)
    if with_cert:
        (directory / CA_CERT).write_text(ca.certificate_pem())
    return directory


def test_made_once_and_the_same_at_every_open(engine: Engine) -> None:
    first = NodeCA.open(engine, DOMAIN, time.time)
    again = NodeCA.open(engine, DOMAIN, time.time)
    assert again.certificate_pem() == first.certificate_pem()
    assert rows(engine) == 1


def test_a_certificate_signed_through_one_open_verifies_with_the_others_ca(
    engine: Engine, tmp_path: Path
) -> None:
    """What two replicas do: one signs a node's certificate, the other publishes the CA."""
    signer = NodeCA.open(engine, DOMAIN, time.time)
    publisher = NodeCA.open(engine, DOMAIN, time.time)
    key = ec.generate_private_key(ec.SECP256R1())
    signed = signer.sign(request_public_key(csr_pem(key)), "n1", time.time(), 600)
    ca_pem = publisher.certificate_pem()
    assert handshake(signed.pem, key, ca_pem, f"n1.{DOMAIN}", tmp_path) == "ok"


def test_replicas_opening_an_empty_database_at_once_get_one_ca(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]
    upgrade(engines[0])
    start = threading.Barrier(len(engines))
    got: list[str] = []
    errors: list[BaseException] = []

    def open_one(engine: Engine) -> None:
        start.wait()
        try:
            got.append(NodeCA.open(engine, DOMAIN, time.time).certificate_pem())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len(got) == 4 and len(set(got)) == 1
        assert rows(engines[0]) == 1
    finally:
        for e in engines:
            e.dispose()


def test_a_ca_for_another_domain_is_refused(engine: Engine) -> None:
    NodeCA.open(engine, DOMAIN, time.time)
    with pytest.raises(ValueError, match="another node domain"):
        NodeCA.open(engine, "other.internal", time.time)


def test_the_ca_an_older_version_kept_in_the_state_dir_is_imported_then_removed(
    engine: Engine, tmp_path: Path
) -> None:
    old = NodeCA.generate(DOMAIN, time.time())
    directory = write_legacy(tmp_path, old)
    imported = NodeCA.open(engine, DOMAIN, time.time, legacy_dir=tmp_path)
    assert imported.certificate_pem() == old.certificate_pem()
    assert not directory.exists()  # no second copy of the key left behind
    # the next open (any replica) has it from the database
    assert NodeCA.open(engine, DOMAIN, time.time).certificate_pem() == old.certificate_pem()


def test_a_legacy_key_without_its_certificate_gets_one(engine: Engine, tmp_path: Path) -> None:
    old = NodeCA.generate(DOMAIN, time.time())
    write_legacy(tmp_path, old, with_cert=False)
    imported = NodeCA.open(engine, DOMAIN, time.time, legacy_dir=tmp_path)
    assert imported.certificate.public_key() == old.certificate.public_key()


def test_a_legacy_ca_for_another_domain_is_refused_and_kept(engine: Engine, tmp_path: Path) -> None:
    directory = write_legacy(tmp_path, NodeCA.generate("other.internal", time.time()))
    with pytest.raises(ValueError, match="another node domain"):
        NodeCA.open(engine, DOMAIN, time.time, legacy_dir=tmp_path)
    assert (directory / CA_KEY).exists() and rows(engine) == 0


def test_a_legacy_copy_of_the_stored_ca_is_removed(engine: Engine, tmp_path: Path) -> None:
    """Replicas that shared one state directory: the second finds the row and the files."""
    old = NodeCA.generate(DOMAIN, time.time())
    directory = write_legacy(tmp_path, old)
    shutil.copytree(directory, tmp_path / "copy" / CA_DIR)
    NodeCA.open(engine, DOMAIN, time.time, legacy_dir=tmp_path)
    again = NodeCA.open(engine, DOMAIN, time.time, legacy_dir=tmp_path / "copy")
    assert again.certificate_pem() == old.certificate_pem()
    assert not (tmp_path / "copy" / CA_DIR).exists()


def test_a_replicas_own_legacy_ca_is_left_with_a_warning(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replicas that each kept a CA: the database's wins, the other's nodes need new
    certificates, and its files stay for the operator."""
    stored = NodeCA.open(engine, DOMAIN, time.time)
    directory = write_legacy(tmp_path, NodeCA.generate(DOMAIN, time.time()))
    with caplog.at_level(logging.WARNING, logger="control_plane.identity.node_ca"):
        again = NodeCA.open(engine, DOMAIN, time.time, legacy_dir=tmp_path)
    assert again.certificate_pem() == stored.certificate_pem()
    assert (directory / CA_KEY).exists()
    assert "nodes it signed need a new certificate" in caplog.text
