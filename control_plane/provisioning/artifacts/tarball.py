"""Tar files with normalized entries: root-owned, no group/other write, one fixed mtime
(and a gzip header without name or time), so the same tree always makes the same bytes.

What a VM unpacks as root must not carry the builder's uid or a world-writable file, and a
symlink must point inside the archive.
"""

from __future__ import annotations

import contextlib
import gzip as gz
import os
import posixpath
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

MTIME = 1_700_000_000  # fixed: the archive's bytes depend on its contents only


class UnsafeLink(ValueError):
    pass


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = MTIME
    if info.isdir():
        info.mode = 0o755
    elif info.isreg():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    elif info.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(info.name), info.linkname))
        if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise UnsafeLink(f"{info.name} -> {info.linkname} leaves the archive")
    else:
        raise ValueError(f"{info.name}: only files, directories and symlinks are packed")
    return info


def _walk(root: Path, arcname: str, prune: str | None) -> Iterable[tuple[Path, str]]:
    yield root, arcname
    if root.is_dir() and not root.is_symlink():
        for child in sorted(os.listdir(root)):
            if child != prune:
                yield from _walk(root / child, f"{arcname}/{child}", prune)


def write_tar(
    out: Path, members: Iterable[tuple[Path, str]], *, gzip: bool, prune: str | None = None
) -> None:
    """``members``: (path on disk, name in the archive) pairs; directories are recursed,
    sorted, leaving out directories named ``prune`` below a member."""
    with contextlib.ExitStack() as stack:
        raw: BinaryIO | gz.GzipFile = stack.enter_context(out.open("wb"))
        if gzip:
            # No name and a fixed time in the gzip header: the same tree, the same bytes.
            raw = stack.enter_context(
                gz.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=MTIME)
            )
        tar = stack.enter_context(tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT))
        for path, arcname in members:
            for disk, name in _walk(path, arcname, prune):
                info = _normalized(tar.gettarinfo(str(disk), arcname=name))
                if info.isreg():
                    with disk.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
