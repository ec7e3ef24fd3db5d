"""What a viewer's workspace path may be: relative to the session's directory. Pure.

No ``..`` and no absolute paths: a viewer names what lies beneath the session's
directory and nothing else. (The opening itself then refuses a link at any component, so
the lexical answer is the real one.)
"""

from __future__ import annotations


class PathRefused(ValueError):
    """The path is not one a viewer may name; the message says why."""


MAX_PATH_CHARS = 4096


def parts_of(raw: str) -> tuple[str, ...]:
    """The components of ``raw`` below the session's directory (``()``: the directory)."""
    if len(raw) > MAX_PATH_CHARS:
        raise PathRefused(f"path is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in raw:
        raise PathRefused("path contains a NUL byte")
    if raw.startswith("/"):
        raise PathRefused(f"path must be relative to the session's directory, not {raw!r}")
    parts = tuple(part for part in raw.split("/") if part not in ("", "."))
    if ".." in parts:
        raise PathRefused(f"path must not contain '..': {raw!r}")
    return parts


def shown(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "."
