"""Writing callback token files for tests, with an exact mode (also insecure ones, on purpose)."""

from __future__ import annotations

import os
from pathlib import Path


def write_token(path: Path, token: str, mode: int = 0o600) -> Path:
    # Created with its mode, so a 0600 file is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, mode)  # exact, whatever the umask
    return path
