"""Secrets at rest are the control plane's alone (issue 28, item 4): the SQLite database (the
signing keys, the node CA's key) and its -wal and -shm are 0600 whatever the directory and
the umask, a state directory others may enter is set to 0700 (and said), one of another
user is refused, and so is a secrets file others may read. Real files, real modes, and a
real other user (a pool user, as root) failing to read the database."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.identity.secrets import SecretStoreError
from control_plane.plane import ControlPlane, UnsafeState
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import DB_FILENAME
from tests.containment.pool import made_pool

SIDE_FILES = ("-wal", "-shm")


def settings_at(state_dir: Path, secrets_file: Path | None = None) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=state_dir,
        public_url="http://127.0.0.1:1",
        key_activation_delay_s=0,
        secrets_file=secrets_file,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(state_dir: Path) -> list[Path]:
    db = state_dir / DB_FILENAME
    return [db, *(db.with_name(db.name + s) for s in SIDE_FILES)]


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def opened(settings: ControlPlaneSettings) -> Iterator[ControlPlane]:
    """An open control plane that has written its keys, its ledger and its node CA: the
    database and its -wal and -shm exist while it is open."""
    plane = ControlPlane.open(settings)
    try:
        plane.tokens.mint_callback_token("n1")
        assert plane.node_ca.certificate_pem()
        yield plane
    finally:
        plane.close()


@pytest.mark.parametrize("mask", [0o022, 0o000, 0o277], ids=["umask022", "umask000", "umask277"])
def test_the_database_is_0600_in_an_open_directory_whatever_the_umask(
    tmp_path: Path, mask: int, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "cp"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    with caplog.at_level(logging.WARNING), umask(mask), opened(settings_at(state)):
        files = database_files(state)
        assert all(f.exists() for f in files), files
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(state) == 0o700
    assert f"state directory {state} had mode 0755" in caplog.text


def test_database_files_open_to_others_are_narrowed_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "cp"
    with opened(settings_at(state)):
        pass
    db = state / DB_FILENAME
    # An older version's files, left readable: held open in WAL mode so -wal and -shm exist.
    holder = sqlite3.connect(db)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE IF NOT EXISTS held (x)")
        holder.execute("INSERT INTO held VALUES (1)")
        holder.commit()
        for f in database_files(state):
            f.chmod(0o644)
        with caplog.at_level(logging.WARNING), opened(settings_at(state)):
            assert [mode(f) for f in database_files(state)] == [0o600] * 3
    finally:
        holder.close()
    assert f"{db} had mode 0644" in caplog.text and "rotate the signing keys" in caplog.text


def test_a_state_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    with made_pool(1) as pool:
        state = tmp_path / "cp"
        state.mkdir(mode=0o700)
        user = pool.spec.user(0)
        os.chown(state, user.uid, user.gid)
        with pytest.raises(UnsafeState, match=f"belongs to uid {user.uid}"):
            ControlPlane.open(settings_at(state))
        assert not (state / DB_FILENAME).exists()


def test_another_user_cannot_read_the_database(tmp_path: Path) -> None:
    with made_pool(1) as pool:
        user = pool.spec.user(0)

        def read_as_user(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["cat", str(path)],
                user=user.uid,
                group=user.gid,
                extra_groups=[],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

        # Below the pool's base, which the user can reach (tmp_path's parents are 0700).
        state = pool.base / "cp-state"
        state.mkdir(mode=0o755)
        state.chmod(0o755)
        control = state / "readable"
        control.write_text("anyone")
        control.chmod(0o644)
        assert read_as_user(control).stdout == "anyone"  # while others may enter
        with opened(settings_at(state)):
            assert "Permission denied" in read_as_user(control).stderr  # the directory: 0700
            # An operator opens the directory again: the files themselves still refuse.
            state.chmod(0o755)
            assert read_as_user(control).stdout == "anyone"
            for f in database_files(state):
                assert f.exists(), f
                denied = read_as_user(f)
                assert denied.returncode != 0 and "Permission denied" in denied.stderr, f


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o620, 0o610])
def test_a_secrets_file_others_may_use_is_refused_at_start(tmp_path: Path, file_mode: int) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text('{"claude": {"ANTHROPIC_API_KEY": "sk-secret"}}')
    secrets.chmod(file_mode)
    with pytest.raises(UnsafeState) as refused:
        ControlPlane.open(settings_at(tmp_path / "cp", secrets_file=secrets))
    assert f"has mode {file_mode:04o}" in str(refused.value)
    assert f"chmod 600 {secrets}" in str(refused.value)
    assert "sk-secret" not in str(refused.value)


def test_a_secrets_file_is_checked_at_each_lookup(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    settings = settings_at(tmp_path / "cp", secrets_file=secrets)
    # Not there yet at start: it may come later (each lookup reads it).
    with opened(settings) as plane:
        secrets.write_text('{"claude": {"ANTHROPIC_API_KEY": "sk-secret"}}')
        secrets.chmod(0o600)
        assert plane.secrets.env_for("claude") == {"ANTHROPIC_API_KEY": "sk-secret"}
        secrets.chmod(0o640)
        with pytest.raises(SecretStoreError, match="has mode 0640") as refused:
            plane.secrets.env_for("claude")
        assert "sk-secret" not in str(refused.value)
    # A symbolic link is refused outright (the file it names could be swapped).
    link = tmp_path / "link.json"
    link.symlink_to(secrets)
    secrets.chmod(0o600)
    with pytest.raises(UnsafeState, match="cannot open secrets file"):
        ControlPlane.open(settings_at(tmp_path / "cp", secrets_file=link))


def test_a_second_engine_on_the_database_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    # `vm-agent dev` opens engines beside its running control plane's: making the file
    # private must not close a descriptor of it (that drops this process's SQLite locks)
    import subprocess
    import sys

    from sqlalchemy import text

    from control_plane.storage.db import make_engine

    url = f"sqlite:///{tmp_path / 'cp.db'}"
    first = make_engine(url)
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    held = first.connect()  # an open connection, as the running server has
    held.execute(text("SELECT count(*) FROM t")).scalar_one()
    for _ in range(3):
        make_engine(url).dispose()
    writer = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); "
        "c.execute('PRAGMA journal_mode=WAL')\n"
        "for i in range(200):\n    c.execute('INSERT INTO t VALUES (?)', (i,)); c.commit()"
    )
    other = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "cp.db")])
    for i in range(200):
        with first.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": -i})
        held.execute(text("SELECT count(*) FROM t")).scalar_one()
    assert other.wait(timeout=60) == 0
    assert held.execute(text("SELECT count(*) FROM t")).scalar_one() == 400
    held.close()
    first.dispose()
