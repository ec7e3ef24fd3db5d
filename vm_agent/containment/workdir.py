"""Making a session's working directory real: walked without links, owned by its user.

The first component under a workspace root is the daemon's to make (the root belongs to
root, mode 0755): it is created owned by the session's user, mode 0700, so other owners'
agents cannot look in. Anything deeper is walked and created with the user's own file
credentials, so a directory the user could not make or enter is refused, not forced.
An existing working directory must belong to the session's user.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vm_agent.containment import fsuid
from vm_agent.containment.beneath import Beneath
from vm_agent.containment.paths import Workdir, WorkdirRefused

WORKDIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int
    switch: bool  # act with this user's file credentials (the daemon is root, it is not)


def _open_top(root_fd: int, name: str, owner: Owner) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=root_fd)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        # O_DIRECTORY wins over O_NOFOLLOW: say which it is.
        if stat.S_ISLNK(os.stat(name, dir_fd=root_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, "a symbolic link", name) from None
        raise
    try:
        os.mkdir(name, WORKDIR_MODE, dir_fd=root_fd)
        made = True
    except FileExistsError:
        made = False
    fd = os.open(name, flags, dir_fd=root_fd)
    if made:
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, WORKDIR_MODE)
    return fd


def _refusal(exc: OSError, shown: Path) -> WorkdirRefused:
    if exc.errno == errno.ELOOP:
        return WorkdirRefused(f"cwd {shown}: a component is a symbolic link")
    if exc.errno == errno.ENOTDIR:
        return WorkdirRefused(f"cwd {shown}: a component is not a directory")
    if exc.errno == errno.EACCES:
        return WorkdirRefused(f"cwd {shown}: the session's user may not enter or create it")
    return WorkdirRefused(f"cwd {shown}: {exc.strerror}")


def prepare_workdir(workdir: Workdir, owner: Owner) -> Path:
    """Creates what is missing and checks ownership; blocking (run it in a worker thread)."""
    shown = Path(str(workdir.path))
    try:
        root_fd = os.open(str(workdir.root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise WorkdirRefused(
            f"workspace root {workdir.root} is not usable: {exc.strerror}"
        ) from exc
    try:
        try:
            top = _open_top(root_fd, workdir.parts[0], owner)
        except OSError as exc:
            raise _refusal(exc, shown) from exc
        try:
            try:
                if owner.switch:
                    with fsuid.acting_as(owner.uid, owner.gid):
                        final = Beneath(top).open_dir(
                            workdir.parts[1:], create=True, mode=WORKDIR_MODE
                        )
                else:
                    final = Beneath(top).open_dir(workdir.parts[1:], create=True, mode=WORKDIR_MODE)
            except OSError as exc:
                raise _refusal(exc, shown) from exc
            try:
                st = os.fstat(final)
            finally:
                os.close(final)
        finally:
            os.close(top)
    finally:
        os.close(root_fd)
    if not stat.S_ISDIR(st.st_mode):
        raise WorkdirRefused(f"cwd {shown} is not a directory")
    if st.st_uid != owner.uid:
        raise WorkdirRefused(
            f"cwd {shown} belongs to uid {st.st_uid}, not to the session's user (uid {owner.uid})"
        )
    return shown
