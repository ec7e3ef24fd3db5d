"""``fs/read_text_file`` and ``fs/write_text_file``: confined to the session's directories.

Every path is resolved (symlinks and ``..``) before it is checked against the allowed roots,
and the blocking file work runs in a worker thread so the event loop never waits on a disk.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel

from vm_agent.acp.lazy import lazy_module
from vm_agent.jsonrpc.errors import INTERNAL_ERROR, RESOURCE_NOT_FOUND, JsonRpcError
from vm_agent.jsonrpc.validation import parse_params

if TYPE_CHECKING:
    from acp import schema
else:
    schema = lazy_module("acp.schema")

M = TypeVar("M", bound=BaseModel)

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 8 * MiB


def _invalid(message: str) -> JsonRpcError:
    return JsonRpcError.invalid_params(message)


def _os_error(action: str, path: str, exc: OSError) -> JsonRpcError:
    if isinstance(exc, FileNotFoundError):
        # ACP's wording for -32002: agents (gemini-cli) match on it to see a file is new.
        return JsonRpcError(RESOURCE_NOT_FOUND, f"Resource not found: {path}")
    if isinstance(exc, IsADirectoryError):
        return _invalid(f"is a directory, not a file: {path}")
    if isinstance(exc, PermissionError):
        return _invalid(f"permission denied: {path}")
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


class FileSystemService:
    """Answers the agent's file requests inside ``root`` and ``extra_allowed``."""

    def __init__(
        self,
        root: Path,
        *,
        extra_allowed: Sequence[Path] = (),
        max_read_bytes: int = DEFAULT_MAX_BYTES,
        max_write_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        # Resolved once: the roots themselves are trusted configuration.
        self._roots = tuple(p.resolve() for p in (root, *extra_allowed))
        self._max_read = max_read_bytes
        self._max_write = max_write_bytes

    @property
    def roots(self) -> tuple[Path, ...]:
        return self._roots

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

    def _confine(self, raw: str) -> Path:
        """The resolved path, or an error if it is relative or lands outside every root."""
        if "\x00" in raw:
            raise _invalid("path contains a NUL byte")
        given = Path(raw)
        if not given.is_absolute():
            raise _invalid(f"path must be absolute: {raw!r}")
        resolved = given.resolve(strict=False)
        if not any(resolved == root or resolved.is_relative_to(root) for root in self._roots):
            allowed = ", ".join(str(r) for r in self._roots)
            raise _invalid(f"{raw} is outside the allowed directories ({allowed})")
        return resolved

    def _read_sync(self, raw: str) -> str:
        path = self._confine(raw)
        try:
            # O_NONBLOCK: opening a FIFO must not hang the worker thread.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise _invalid(f"not a regular file: {raw}")
                size = st.st_size
                if size > self._max_read:
                    raise _invalid(
                        f"{raw} is {size} bytes, more than the {self._max_read}-byte read limit"
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
        path = self._confine(raw)
        if path.is_dir():
            raise _invalid(f"is a directory, not a file: {raw}")
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise _os_error("write", raw, exc) from exc
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data, mode)
        except OSError as exc:
            raise _os_error("write", raw, exc) from exc


def _atomic_write(path: Path, data: bytes, mode: int | None) -> None:
    """Writes a temp file beside ``path`` and renames it over: readers see old or new, whole."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            # 0o666 lets the umask decide a new file's mode, as a plain create would.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
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
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
