"""Listing, stat, reading and writing beneath a session's directory, as its agent user.

Every request opens the session's directory (never through a link) and resolves the rest
from that handle with ``Beneath`` (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a
walk with O_NOFOLLOW): a link at any component is refused, even one pointing inside, and a
rename racing the request cannot lead outside. The work runs in a worker thread holding
the agent user's fsuid, fsgid and groups, so a viewer reads and writes nothing the agent's
user could not. Writes go through a temp file renamed over the target (``acp.fs``).
A link itself may be listed and stat'ed (its target is shown), never opened.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio

from vm_agent.acp.fs import replace_file
from vm_agent.containment import fsuid
from vm_agent.containment.beneath import Beneath
from vm_agent.jsonrpc.errors import RESOURCE_NOT_FOUND, JsonRpcError
from vm_agent.workspace.paths import PathRefused, parts_of, shown

MiB = 1024 * 1024
MAX_READ_BYTES = 1 * MiB  # one read's range; base64 of it stays well inside a frame
MAX_WRITE_BYTES = 2 * MiB
MAX_ENTRIES = 10_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
# The session's directory itself was walked without links at start; never a link now.
_ROOT_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_T = TypeVar("_T")


def invalid(message: str) -> JsonRpcError:
    return JsonRpcError.invalid_params(message)


def os_error(path: str, exc: OSError) -> JsonRpcError:
    """A viewer's answer for what the kernel said (never a traceback, never a 500)."""
    if isinstance(exc, FileNotFoundError):
        return JsonRpcError(RESOURCE_NOT_FOUND, f"not found: {path}")
    if isinstance(exc, NotADirectoryError):
        return invalid(f"a component is not a directory: {path}")
    if isinstance(exc, IsADirectoryError):
        return invalid(f"is a directory: {path}")
    if isinstance(exc, PermissionError):
        return invalid(f"permission denied: {path}")
    if exc.errno == errno.ELOOP:
        return invalid(f"{path} goes through a symbolic link (links are not followed)")
    if exc.errno == errno.EXDEV:
        return invalid(f"{path} leads outside the session's directory")
    return invalid(f"{path}: {exc.strerror or exc}")


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def describe(name: str, st: os.stat_result, target: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "type": _kind(st.st_mode),
        "size": st.st_size,
        "mode": stat.S_IMODE(st.st_mode),
        "mtime": st.st_mtime,
    }
    if target is not None:
        out["target"] = target
    return out


def encode(data: bytes) -> tuple[str, str]:
    """(encoding, content): UTF-8 text when the bytes are that, else base64."""
    try:
        return "utf-8", data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(data).decode("ascii")


class WorkspaceFiles:
    """The files of one session's directory ``root``; ``credentials`` (uid, gid) to act as."""

    def __init__(
        self,
        root: Path,
        *,
        credentials: tuple[int, int] | None = None,
        use_openat2: bool | None = None,
        max_write_bytes: int = MAX_WRITE_BYTES,
    ) -> None:
        if credentials is not None and not fsuid.available():
            raise PermissionError("acting as another user's files needs root")
        self.root = root
        self._credentials = credentials
        self._use_openat2 = use_openat2
        self.max_write_bytes = max_write_bytes

    async def list(self, path: str, limit: int = MAX_ENTRIES) -> dict[str, Any]:
        return await self._run(path, lambda b, p: self._list(b, p, limit))

    async def stat(self, path: str) -> dict[str, Any]:
        return await self._run(path, self._stat)

    async def read(self, path: str, offset: int, length: int) -> dict[str, Any]:
        if length > MAX_READ_BYTES:
            raise invalid(f"length {length} is more than the {MAX_READ_BYTES}-byte read limit")
        return await self._run(path, lambda b, p: self._read(b, p, offset, length))

    async def write(self, path: str, data: bytes, *, make_dirs: bool) -> dict[str, Any]:
        if len(data) > self.max_write_bytes:
            raise invalid(
                f"content is {len(data)} bytes, more than the {self.max_write_bytes}-byte "
                "upload limit"
            )
        return await self._run(path, lambda b, p: self._write(b, p, data, make_dirs))

    # Blocking parts, in a worker thread with the agent user's file credentials.

    async def _run(self, raw: str, fn: Callable[[Beneath, tuple[str, ...]], _T]) -> _T:
        try:
            parts = parts_of(raw)
        except PathRefused as exc:
            raise invalid(str(exc)) from None

        def work() -> _T:
            with self._as_agent():
                try:
                    root_fd = os.open(self.root, _ROOT_FLAGS)
                except OSError as exc:
                    raise invalid(
                        f"the session's directory cannot be opened: {exc.strerror}"
                    ) from None
                try:
                    return fn(Beneath(root_fd, use_openat2=self._use_openat2), parts)
                except OSError as exc:
                    raise os_error(shown(parts), exc) from None
                finally:
                    os.close(root_fd)

        return await anyio.to_thread.run_sync(work)

    @contextmanager
    def _as_agent(self) -> Iterator[None]:
        if self._credentials is None:
            yield
            return
        with fsuid.acting_as(*self._credentials):
            yield

    def _open_dir(self, b: Beneath, parts: tuple[str, ...]) -> int:
        if not parts:
            return os.open(".", _DIR_FLAGS, dir_fd=b.root_fd)
        try:
            return b.open_file(parts, _DIR_FLAGS)
        except NotADirectoryError:
            # O_DIRECTORY meets a link at the last component as "not a directory": say which.
            if self._stat(b, parts)["type"] == "symlink":
                raise OSError(errno.ELOOP, "a symbolic link", shown(parts)) from None
            raise

    def _list(self, b: Beneath, parts: tuple[str, ...], limit: int) -> dict[str, Any]:
        fd = self._open_dir(b, parts)
        entries: list[dict[str, Any]] = []
        truncated = False
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(entries) >= limit:
                        truncated = True
                        break
                    try:
                        st = entry.stat(follow_symlinks=False)
                        target = os.readlink(entry.name, dir_fd=fd) if entry.is_symlink() else None
                    except OSError:
                        continue  # gone meanwhile
                    entries.append(describe(entry.name, st, target))
        finally:
            os.close(fd)
        entries.sort(key=lambda e: str(e["name"]))
        return {"path": shown(parts), "entries": entries, "truncated": truncated}

    def _stat(self, b: Beneath, parts: tuple[str, ...]) -> dict[str, Any]:
        if not parts:
            fd = self._open_dir(b, parts)
            try:
                return {"path": ".", **describe(".", os.fstat(fd))}
            finally:
                os.close(fd)
        parent = b.open_dir(parts[:-1])
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            target = os.readlink(parts[-1], dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
        finally:
            os.close(parent)
        return {"path": shown(parts), **describe(parts[-1], st, target)}

    def _read(self, b: Beneath, parts: tuple[str, ...], offset: int, length: int) -> dict[str, Any]:
        path = shown(parts)
        if not parts:
            raise invalid("is a directory: .")
        # O_NONBLOCK: opening a FIFO must not hang the worker thread.
        fd = b.open_file(parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise invalid(f"not a regular file: {path}")
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        encoding, content = encode(data)
        return {
            "path": path,
            "size": st.st_size,
            "offset": offset,
            "length": len(data),
            "eof": offset + len(data) >= st.st_size,
            "encoding": encoding,
            "content": content,
        }

    def _write(
        self, b: Beneath, parts: tuple[str, ...], data: bytes, make_dirs: bool
    ) -> dict[str, Any]:
        path = shown(parts)
        if not parts:
            raise invalid("is a directory: .")
        dir_fd = b.open_dir(parts[:-1], create=make_dirs)
        try:
            replace_file(dir_fd, parts[-1], data, path)
        finally:
            os.close(dir_fd)
        return {"path": path, "size": len(data)}
