"""Where a session may work: strictly under a workspace root, never near the daemon's own files.

Pure and lexical: the shell then walks the answer component by component without
following a link (``workdir.py``), so the lexical answer is also the real one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath


class WorkdirRefused(ValueError):
    """The cwd is not one a session may have; the message says why."""


@dataclass(frozen=True, slots=True)
class Workdir:
    root: PurePosixPath  # the workspace root it lies under
    parts: tuple[str, ...]  # at least one component below the root

    @property
    def path(self) -> PurePosixPath:
        return self.root.joinpath(*self.parts)


def normalize(raw: str) -> PurePosixPath:
    if not raw or "\x00" in raw:
        raise WorkdirRefused("cwd must be a non-empty path without NUL bytes")
    if not raw.startswith("/"):
        raise WorkdirRefused(f"cwd must be an absolute path, not {raw!r}")
    # Lexical '..' is safe here only because no component is allowed to be a link. (One
    # leading slash: POSIX lets normpath keep '//'.)
    return PurePosixPath(posixpath.normpath("/" + raw.lstrip("/")))


def _within(path: PurePosixPath, other: PurePosixPath) -> bool:
    return path == other or other in path.parents


def overlapping(path: PurePosixPath, forbidden: Sequence[PurePosixPath]) -> PurePosixPath | None:
    """The first forbidden path that ``path`` lies in or contains."""
    for bad in forbidden:
        if _within(path, bad) or _within(bad, path):
            return bad
    return None


def check_workdir(
    raw: str,
    roots: Sequence[PurePosixPath],
    forbidden: Sequence[PurePosixPath] = (),
) -> Workdir:
    """The workspace root and components of ``raw``; ``WorkdirRefused`` with the reason."""
    path = normalize(raw)
    if not roots:
        raise WorkdirRefused("no workspace roots are configured (VM_AGENT_WORKSPACE_ROOTS)")
    for root in roots:
        if path == root:
            raise WorkdirRefused(f"cwd {path} is a workspace root itself; use a directory under it")
    under = [root for root in roots if root in path.parents]
    if not under:
        listed = ", ".join(str(r) for r in roots)
        raise WorkdirRefused(f"cwd {path} is not under a workspace root ({listed})")
    if bad := overlapping(path, forbidden):
        raise WorkdirRefused(f"cwd {path} overlaps the daemon's own files ({bad})")
    # The innermost root, should one root lie inside another.
    root = max(under, key=lambda r: len(r.parts))
    return Workdir(root, path.relative_to(root).parts)


def parse_roots(value: str) -> tuple[PurePosixPath, ...]:
    """``VM_AGENT_WORKSPACE_ROOTS``: absolute paths separated by ':', never '/' itself."""
    roots: list[PurePosixPath] = []
    for piece in value.split(":"):
        if not piece:
            continue
        if not piece.startswith("/"):
            raise ValueError(f"workspace root {piece!r} is not an absolute path")
        root = PurePosixPath(posixpath.normpath("/" + piece.lstrip("/")))
        if root == PurePosixPath("/"):
            raise ValueError("'/' cannot be a workspace root")
        roots.append(root)
    if not roots:
        raise ValueError("at least one workspace root is needed")
    return tuple(roots)
