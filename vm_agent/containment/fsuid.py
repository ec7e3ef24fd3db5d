"""File access as another user from one thread: the thread's fsuid, fsgid and groups.

The daemon is root and the agent is not: a file request must get exactly what the agent's
user itself would get. On Linux these credentials are per thread at the kernel level;
glibc's ``setgroups`` would change every thread of the process, so groups are set with the
raw system call. Changing fsuid away from 0 also drops the file capabilities (DAC
override and friends) from the thread's effective set; changing it back restores them.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159}.get(platform.machine())
_local = threading.local()


class CredentialsError(OSError):
    pass


def _setgroups_thread(gids: list[int]) -> None:
    if _SETGROUPS is None:
        raise CredentialsError(f"no setgroups system call number for {platform.machine()}")
    array = (ctypes.c_uint32 * max(1, len(gids)))(*gids)
    if _libc.syscall(ctypes.c_long(_SETGROUPS), ctypes.c_size_t(len(gids)), array) != 0:
        err = ctypes.get_errno()
        raise CredentialsError(err, f"setgroups: {os.strerror(err)}")


def _set_fs(uid: int, gid: int) -> None:
    # setfsuid/setfsgid report no error: read back (-1 changes nothing) to be sure.
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    if _libc.setfsuid(-1) != uid or _libc.setfsgid(-1) != gid:
        raise CredentialsError(f"cannot take fsuid {uid} and fsgid {gid}")


@contextmanager
def acting_as(uid: int, gid: int) -> Iterator[None]:
    """Runs the block's file operations as ``uid``/``gid`` (in this thread only)."""
    if getattr(_local, "active", False):
        raise RuntimeError("acting_as does not nest")
    groups = os.getgroups()
    my_uid, my_gid = os.geteuid(), os.getegid()
    _local.active = True
    try:
        _setgroups_thread([gid])
        try:
            _set_fs(uid, gid)
            yield
        finally:
            _set_fs(my_uid, my_gid)
            _setgroups_thread(groups)
    finally:
        _local.active = False


def available() -> bool:
    """Whether this process can take other users' file credentials (it is root)."""
    return os.geteuid() == 0 and _SETGROUPS is not None
