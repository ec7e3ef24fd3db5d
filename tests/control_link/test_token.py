"""The callback token file: refused when others can read it, replaced atomically at 0600."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import jwt
import pytest

from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.control_link import CallbackTokenStore, InsecureTokenFile, TokenFileError

TOKEN = "tok-" + "a" * 40


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o601])
def test_a_file_group_or_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_token(tmp_path / "callback-token", TOKEN, mode)
    with pytest.raises(InsecureTokenFile) as err:
        CallbackTokenStore.load(path)
    message = str(err.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert "\n" not in message
    assert TOKEN not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_an_owner_only_file_is_read(tmp_path: Path, mode: int) -> None:
    path = write_token(tmp_path / "callback-token", TOKEN, mode)
    assert CallbackTokenStore.load(path).value == TOKEN


def test_missing_or_empty_files_are_refused_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(TokenFileError, match="does not exist") as err:
        CallbackTokenStore.load(missing)
    assert isinstance(err.value, OSError)  # the daemon handles it as an OSError
    empty = write_token(tmp_path / "empty", "  ")
    with pytest.raises(TokenFileError, match="is empty"):
        CallbackTokenStore.load(empty)
    two = write_token(tmp_path / "two", "one two")
    with pytest.raises(TokenFileError, match="more than one word"):
        CallbackTokenStore.load(two)


def test_a_symlink_or_a_directory_is_refused(tmp_path: Path) -> None:
    real = write_token(tmp_path / "real", TOKEN)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(TokenFileError):
        CallbackTokenStore.load(link)
    with pytest.raises(TokenFileError, match="not a regular file"):
        CallbackTokenStore.load(tmp_path)


def test_replace_writes_atomically_at_0600_and_the_redactor_keeps_both(tmp_path: Path) -> None:
    path = write_token(tmp_path / "callback-token", TOKEN)
    redactor = Redactor()
    store = CallbackTokenStore.load(path, redactor=redactor)
    inode = path.stat().st_ino
    new = "tok-" + "b" * 40
    store.replace(new)
    assert store.value == new
    assert path.read_text().strip() == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode  # renamed over, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["callback-token"]  # no temp left
    text = redactor.redact(f"old {TOKEN} new {new}")
    assert TOKEN not in text
    assert new not in text
    # The new file is accepted by a restarted daemon.
    assert CallbackTokenStore.load(path).value == new


def test_replace_refuses_a_malformed_token(tmp_path: Path) -> None:
    store = CallbackTokenStore.load(write_token(tmp_path / "t", TOKEN))
    for bad in ("", "a b", "tök-123456"):
        with pytest.raises(ValueError):
            store.replace(bad)
    assert store.value == TOKEN


def test_reload_sees_a_token_an_operator_put_in_the_file(tmp_path: Path) -> None:
    path = write_token(tmp_path / "callback-token", TOKEN)
    redactor = Redactor()
    store = CallbackTokenStore.load(path, redactor=redactor)
    assert store.reload() is False
    write_token(path, "tok-" + "c" * 40)
    assert store.reload() is True
    assert store.value == "tok-" + "c" * 40
    assert "c" * 40 not in redactor.redact("tok-" + "c" * 40)


def test_expiry_is_read_from_the_jwt_without_verifying(tmp_path: Path) -> None:
    exp = int(time.time()) + 100
    token = jwt.encode({"exp": exp, "sub": "n"}, "k" * 32, algorithm="HS256")
    store = CallbackTokenStore.load(write_token(tmp_path / "t", token))
    assert store.expires_at() == exp
    left = store.expires_in_s(now=exp - 40)
    assert left == 40
    opaque = CallbackTokenStore.load(write_token(tmp_path / "o", TOKEN))
    assert opaque.expires_at() is None
