"""Opening a file that only its owner may read (the callback token, the TLS key).

Checked on the open descriptor (``fstat``), so there is no window between the check and
the read; a symbolic link is refused outright (``O_NOFOLLOW``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileUnusable(OSError):
    """The file is missing, unreadable or not a regular file (one line for a person)."""


class NotPrivate(FileUnusable):
    """Group or others have some access to the file (read, write or execute)."""


def open_private(path: Path, what: str) -> int:
    """A read-only descriptor of ``path``; the caller closes it.

    ``what`` names the file in messages ("callback token file", "TLS key file").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileUnusable(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise FileUnusable(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileUnusable(f"{what} {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise NotPrivate(
                f"{what} {path} has mode {mode:04o}: group or others have access to it; "
                f"run `chmod 600 {path}`"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private(path: Path, what: str) -> bytes:
    """The whole of ``path``, opened as ``open_private`` does (its errors, its checks)."""
    fd = open_private(path, what)
    with os.fdopen(fd, "rb") as f:
        return f.read()
