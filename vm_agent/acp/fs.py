"""``fs/read_text_file`` and ``fs/write_text_file``: beneath the session's directories only.

Each root is opened once; every request is resolved from that handle, never from its path
again, and no component may be a link (``containment.beneath``: openat2 with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a walk with O_NOFOLLOW), so swapping a link or
a directory in while a request runs cannot lead outside. Writes go to a temp file in the
target's directory (by handle) and are renamed over. When the daemon is root and the
agent is not, the file work runs with the agent user's file credentials (its fsuid, fsgid
and groups, in that worker thread only): the daemon reads and writes nothing for an agent
that its user could not, and what it creates belongs to that user. Set-id bits are never
carried over. The blocking work runs in worker threads; how many requests of one agent
are handled at once is bounded by the connection (``AcpClient``).
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel

from vm_agent.acp.lazy import lazy_module
from vm_agent.containment import fsuid
from vm_agent.containment.beneath import Beneath
from vm_agent.jsonrpc.errors import INTERNAL_ERROR, RESOURCE_NOT_FOUND, JsonRpcError
from vm_agent.jsonrpc.validation import parse_params

if TYPE_CHECKING:
    from acp import schema
else:
    schema = lazy_module("acp.schema")

M = TypeVar("M", bound=BaseModel)

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 8 * MiB
_NO_SETID = 0o777  # permission bits kept from a replaced file: never setuid, setgid, sticky


def _invalid(message: str) -> JsonRpcError:
    return JsonRpcError.invalid_params(message)


def _os_error(action: str, path: str, exc: OSError) -> JsonRpcError:
    if isinstance(exc, FileNotFoundError):
        # ACP's wording for -32002: agents (gemini-cli) match on it to see a file is new.
        return JsonRpcError(RESOURCE_NOT_FOUND, f"Resource not found: {path}")
    if isinstance(exc, IsADirectoryError):
        return _invalid(f"is a directory, not a file: {path}")
    if isinstance(exc, NotADirectoryError):
        return _invalid(f"a component is not a directory: {path}")
    if isinstance(exc, PermissionError):
        return _invalid(f"permission denied: {path}")
    if exc.errno == errno.ELOOP:
        return _invalid(f"{path} goes through a symbolic link (links are not followed)")
    if exc.errno == errno.EXDEV:
        return _invalid(f"{path} leads outside the allowed directories")
    return JsonRpcError(INTERNAL_ERROR, f"cannot {action} {path}: {exc.strerror or exc}")


def select_lines(content: str, line: int | None, limit: int | None) -> str:
    """The ``limit`` lines from 1-based ``line`` on, line endings kept; all of it by default."""
    if line is None and limit is None:
        return content
    start = (line or 1) - 1
    # Split on '\n' only: str.splitlines would also split on \x0b, \u2028 and friends.
    lines = content.split("\n")
    pieces = [piece + "\n" for piece in lines[:-1]]
    if lines[-1]:
        pieces.append(lines[-1])
    end = len(pieces) if limit is None else start + limit
    return "".join(pieces[start:end])


class _Root:
    """One allowed directory: the names an agent may use for it, and its open handle."""

    def __init__(self, path: Path, *, use_openat2: bool | None) -> None:
        self.names = tuple(dict.fromkeys([posixpath.normpath(str(path)), str(path.resolve())]))
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.beneath = Beneath(self.fd, use_openat2=use_openat2)

    def parts_of(self, path: str) -> tuple[str, ...] | None:
        for name in self.names:
            if path == name:
                return ()
            prefix = name.rstrip("/") + "/"
            if path.startswith(prefix):
                return tuple(path[len(prefix) :].split("/"))
        return None


class FileSystemService:
    """Answers the agent's file requests inside ``root`` and ``extra_allowed``.

    ``credentials`` (uid, gid): act with that user's file credentials (the daemon must be
    root). Call ``close`` when done (it closes the directory handles).
    """

    def __init__(
        self,
        root: Path,
        *,
        extra_allowed: Sequence[Path] = (),
        max_read_bytes: int = DEFAULT_MAX_BYTES,
        max_write_bytes: int = DEFAULT_MAX_BYTES,
        credentials: tuple[int, int] | None = None,
        use_openat2: bool | None = None,
    ) -> None:
        self._roots = tuple(_Root(p, use_openat2=use_openat2) for p in (root, *extra_allowed))
        self._max_read = max_read_bytes
        self._max_write = max_write_bytes
        if credentials is not None and not fsuid.available():
            raise PermissionError("acting as another user's files needs root")
        self._credentials = credentials

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(r.names[0]) for r in self._roots)

    def close(self) -> None:
        for root in self._roots:
            with suppress(OSError):
                os.close(root.fd)

    async def read_text_file(self, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_params(schema.ReadTextFileRequest, params, "fs/read_text_file")
        if req.line is not None and req.line < 1:
            raise _invalid(f"line must be 1 or more (lines are 1-based), got {req.line}")
        if req.limit is not None and req.limit < 0:
            raise _invalid(f"limit must not be negative, got {req.limit}")
        content = await anyio.to_thread.run_sync(self._read_sync, req.path)
        text = select_lines(content, req.line, req.limit)
        return schema.ReadTextFileResponse(content=text).model_dump(
            by_alias=True, exclude_none=True
        )

    async def write_text_file(self, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_params(schema.WriteTextFileRequest, params, "fs/write_text_file")
        try:
            data = req.content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _invalid("content is not valid Unicode (a lone surrogate)") from exc
        if len(data) > self._max_write:
            raise _invalid(
                f"content is {len(data)} bytes, more than the {self._max_write}-byte write limit"
            )
        await anyio.to_thread.run_sync(self._write_sync, req.path, data)
        return schema.WriteTextFileResponse().model_dump(by_alias=True, exclude_none=True)

    # Blocking parts, run in a worker thread.

    @contextmanager
    def _as_agent(self) -> Iterator[None]:
        if self._credentials is None:
            yield
            return
        with fsuid.acting_as(*self._credentials):
            yield

    def _confine(self, raw: str) -> tuple[_Root, tuple[str, ...]]:
        """The root and components of ``raw``; an error if it lies outside every root."""
        if "\x00" in raw:
            raise _invalid("path contains a NUL byte")
        if not raw.startswith("/"):
            raise _invalid(f"path must be absolute: {raw!r}")
        # Lexical '..' matches what the kernel would do only because no link is followed.
        path = posixpath.normpath("/" + raw.lstrip("/"))
        for root in self._roots:
            parts = root.parts_of(path)
            if parts is not None:
                return root, parts
        allowed = ", ".join(r.names[0] for r in self._roots)
        raise _invalid(f"{raw} is outside the allowed directories ({allowed})")

    def _read_sync(self, raw: str) -> str:
        root, parts = self._confine(raw)
        if not parts:
            raise _invalid(f"is a directory, not a file: {raw}")
        try:
            with self._as_agent():
                # O_NONBLOCK: opening a FIFO must not hang the worker thread.
                fd = root.beneath.open_file(parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise _invalid(f"not a regular file: {raw}")
                if st.st_size > self._max_read:
                    raise _invalid(
                        f"{raw} is {st.st_size} bytes, more than the {self._max_read}-byte "
                        "read limit"
                    )
                # Read one byte past the bound in case the file grows under us.
                data = fh.read(self._max_read + 1)
        except OSError as exc:
            raise _os_error("read", raw, exc) from exc
        if len(data) > self._max_read:
            raise _invalid(f"{raw} is larger than the {self._max_read}-byte read limit")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid(f"{raw} is not UTF-8 text (invalid byte at offset {exc.start})") from exc

    def _write_sync(self, raw: str, data: bytes) -> None:
        root, parts = self._confine(raw)
        if not parts:
            raise _invalid(f"is a directory, not a file: {raw}")
        try:
            with self._as_agent():
                dir_fd = root.beneath.open_dir(parts[:-1], create=True)
                try:
                    replace_file(dir_fd, parts[-1], data, raw)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise _os_error("write", raw, exc) from exc


def replace_file(dir_fd: int, name: str, data: bytes, shown: str) -> None:
    """Writes a temp file beside ``name`` and renames it over: readers see old or new, whole."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        mode = None
    else:
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link", shown)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", shown)
        mode = st.st_mode & _NO_SETID
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.tmp"  # within NAME_MAX
        try:
            # 0o666 lets the umask decide a new file's mode, as a plain create would.
            fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
