"""Opening paths beneath a directory handle without following a link at any component.

``openat2(2)`` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS where
the kernel has it (Linux 5.6+, called through ctypes), otherwise a walk one component at
a time with O_NOFOLLOW. Either way a symlink anywhere on the path is an error (ELOOP) and
the path cannot leave the directory, whatever a concurrent process renames or swaps.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Sequence

_SYS_OPENAT2 = 437  # the same number on every architecture's generic syscall table
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
# openat2 answers EAGAIN when a rename raced the walk; it is safe to try again.
_AGAIN_TRIES = 8
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
    raw = os.fsencode(path)
    for _ in range(_AGAIN_TRIES):
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, "the path kept changing while it was opened", path)


def _probe_openat2() -> bool:
    try:
        fd = _openat2(_AT_FDCWD, ".", _DIR_FLAGS, 0)
    except OSError as exc:
        # ENOSYS: an older kernel; EPERM: a seccomp filter that does not know it.
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return False
        raise
    os.close(fd)
    return True


HAVE_OPENAT2 = _probe_openat2()


def _check_parts(parts: Sequence[str]) -> None:
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\x00" in part:
            raise OSError(errno.EINVAL, "bad path component", part)


def _walk_dirs(root_fd: int, parts: Sequence[str], *, create: bool, mode: int) -> int:
    fd = os.open(".", _DIR_FLAGS, dir_fd=root_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                # Made meanwhile: opened (and checked) below like any other.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            # O_PATH with O_NOFOLLOW opens a symlink itself instead of failing: refuse it.
            if not stat.S_ISDIR(os.fstat(nxt).st_mode):
                os.close(nxt)
                raise OSError(errno.ELOOP, "a component is a symbolic link", part)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


class Beneath:
    """Opens paths below ``root_fd`` (a directory descriptor the caller keeps open)."""

    def __init__(self, root_fd: int, *, use_openat2: bool | None = None) -> None:
        self.root_fd = root_fd
        self.openat2 = HAVE_OPENAT2 if use_openat2 is None else use_openat2 and HAVE_OPENAT2

    def open_dir(self, parts: Sequence[str], *, create: bool = False, mode: int = 0o777) -> int:
        """An O_PATH descriptor of the directory ``parts`` (made when missing, if ``create``)."""
        _check_parts(parts)
        if self.openat2 and parts:
            try:
                return _openat2(self.root_fd, "/".join(parts), _DIR_FLAGS, 0)
            except FileNotFoundError:
                if not create:
                    raise
        return _walk_dirs(self.root_fd, parts, create=create, mode=mode)

    def open_file(self, parts: Sequence[str], flags: int, mode: int = 0o666) -> int:
        """``open(2)`` of ``parts`` (at least one component) with ``flags``."""
        _check_parts(parts)
        if not parts:
            raise OSError(errno.EINVAL, "no file name")
        if self.openat2:
            return _openat2(self.root_fd, "/".join(parts), flags, mode)
        dir_fd = _walk_dirs(self.root_fd, parts[:-1], create=False, mode=0)
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
