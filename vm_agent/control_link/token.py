"""The callback token: read from its file, kept in memory, replaced atomically when refreshed.

The file must be readable by its owner only (mode 0600 or stricter); a file that group or
others can read is refused at start, because anyone who reads it can speak for this node.
Every token the store holds (the first and each refreshed one) is registered with the
redactor, so it never reaches a log line, a crash report or an event.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import jwt

from vm_agent.common.private_files import FileUnusable, NotPrivate, open_private
from vm_agent.common.redact import Redactor


class TokenFileError(OSError):
    """The callback token file cannot be used (one line for a person; an OSError)."""


class InsecureTokenFile(TokenFileError):
    """Group or others have any access to the file (read, write or execute)."""


class CallbackTokenStore:
    """The node's callback token. Thread-safe; `value` never touches the disk."""

    def __init__(self, path: Path, value: str, redactor: Redactor | None = None) -> None:
        self.path = path
        self._redactor = redactor
        self._lock = threading.Lock()
        self._value = ""
        self._set(value)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], redactor: Redactor | None = None
    ) -> CallbackTokenStore:
        """Read the token file; raises `InsecureTokenFile` or `TokenFileError` (one line each)."""
        file = Path(path)
        return cls(file, _read_token_file(file), redactor)

    def reload(self) -> bool:
        """Read the file again (an operator may have put a new token there after a 401).

        Returns whether the token changed; raises like `load`.
        """
        value = _read_token_file(self.path)
        with self._lock:
            if value == self._value:
                return False
            self._set(value)
            return True

    @property
    def value(self) -> str:
        return self._value

    def expires_at(self) -> float | None:
        """The token's `exp` (Unix seconds), read without verifying; None if it has none."""
        try:
            claims = jwt.decode(self._value, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None

    def expires_in_s(self, now: float | None = None) -> float | None:
        exp = self.expires_at()
        if exp is None:
            return None
        return exp - (time.time() if now is None else now)

    def replace(self, new_token: str) -> None:
        """Write `new_token` to the file atomically (mode 0600), then use it.

        Blocking file I/O (small): call it from a worker thread in async code. The old
        token stays known to the redactor. On a write error (OSError, raised) the new token
        is used all the same: it is valid, and the old one will expire.
        """
        token = new_token.strip()
        if not token or not token.isascii() or any(c.isspace() for c in token):
            raise ValueError("a callback token is one non-empty ASCII word")
        if self._redactor is not None:
            self._redactor.add_secret(token)  # before it can appear anywhere
        with self._lock:
            if token == self._value:
                return
            try:
                write_token_file(self.path, token)
            finally:
                self._value = token

    def _set(self, value: str) -> None:
        if self._redactor is not None:
            self._redactor.add_secret(value)
        self._value = value


def _read_token_file(file: Path, what: str = "callback token file") -> str:
    try:
        fd = open_private(file, what)
    except NotPrivate as exc:
        raise InsecureTokenFile(str(exc)) from None
    except FileUnusable as exc:
        raise TokenFileError(str(exc)) from None
    try:
        raw = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    try:
        value = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"{what} {file} is not ASCII text") from None
    if not value:
        raise TokenFileError(f"{what} {file} is empty")
    if any(c.isspace() for c in value):
        raise TokenFileError(f"{what} {file} holds more than one word")
    return value


def read_secret_file(file: Path, what: str) -> str:
    """One word from a file only its owner may read (as the callback token file is read)."""
    return _read_token_file(file, what)


def write_token_file(path: Path, token: str) -> None:
    """The token as the daemon reads it: one line, 0600 from the first byte, atomically."""
    write_file_atomically(path, token.encode("ascii") + b"\n")


def write_file_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temp file in the same directory, ``mode``, fsync, rename over, fsync the directory."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
