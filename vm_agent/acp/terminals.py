"""``terminal/*``: commands the agent runs through us, each in a process tree of its own.

A terminal's stdout and stderr share one pipe (interleaved as written) and one bounded
buffer that keeps the tail. Each command starts through the session's ``Launcher``: as
the session's user, in a cgroup of its own inside the session's (or, without cgroups, in a
process group of its own). Killing or releasing it stops that whole tree, so a shell's
children go too, and under cgroups also those that called ``setsid``; leaving the manager
stops every tree it started.
"""

from __future__ import annotations

import logging
import secrets
import signal as signals
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import Process, TaskGroup
from pydantic import BaseModel

from vm_agent.acp.lazy import lazy_module
from vm_agent.jsonrpc.errors import INVALID_REQUEST, RESOURCE_NOT_FOUND, JsonRpcError
from vm_agent.jsonrpc.validation import parse_params
from vm_agent.process import procgroup
from vm_agent.process.launch import Launcher, PlainLauncher

if TYPE_CHECKING:
    from acp import schema
else:
    schema = lazy_module("acp.schema")

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
MiB = 1024 * 1024
DEFAULT_OUTPUT_LIMIT = 1 * MiB
MAX_OUTPUT_LIMIT = 16 * MiB
_READ_CHUNK = 65536
_SHELL_CHARS = frozenset("|&;<>()$`*?~'\"\\")


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


class TailBuffer:
    """Keeps the last ``limit`` bytes of a byte stream, cut at a UTF-8 character start."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.truncated = False
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self.limit
        if excess <= 0:
            return
        # Never start the kept part inside a multi-byte character: skip its continuation bytes.
        while excess < len(self._data) and _is_continuation(self._data[excess]):
            excess += 1
        del self._data[:excess]
        self.truncated = True

    def text(self, *, final: bool) -> str:
        """The kept output as text; an unfinished last character waits unless ``final``."""
        data = bytes(self._data)
        if not final:
            data = data[: _complete_prefix_len(data)]
        return data.decode("utf-8", "replace")


def _complete_prefix_len(data: bytes) -> int:
    """Length of ``data`` without a trailing, still incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if _is_continuation(byte):
            continue
        if byte >= 0xF0:
            need = 4
        elif byte >= 0xE0:
            need = 3
        elif byte >= 0xC0:
            need = 2
        else:
            need = 1
        return len(data) - back if back < need else len(data)
    return len(data)


def exit_status_of(returncode: int) -> schema.TerminalExitStatus:
    """A negative return code means killed by that signal (asyncio's convention)."""
    if returncode >= 0:
        return schema.TerminalExitStatus(exit_code=returncode)
    try:
        name = signals.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return schema.TerminalExitStatus(signal=name)


@dataclass(eq=False)
class _Terminal:
    terminal_id: str
    process: Process
    tree: procgroup.ProcessTree
    leaf: str
    buffer: TailBuffer
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    output_done: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    exit_status: schema.TerminalExitStatus | None = None


class TerminalManager:
    """The terminals of one session; use as ``async with TerminalManager(...) as terms``."""

    def __init__(
        self,
        *,
        cwd: Path,
        base_env: Mapping[str, str],
        default_output_limit: int = DEFAULT_OUTPUT_LIMIT,
        max_output_limit: int = MAX_OUTPUT_LIMIT,
        max_terminals: int = 16,
        kill_grace_s: float = 1.0,
        drain_grace_s: float = 0.5,
        launcher: Launcher | None = None,
    ) -> None:
        self._cwd = cwd.resolve()
        self._base_env = dict(base_env)
        self._default_limit = default_output_limit
        self._max_limit = max_output_limit
        self._max_terminals = max_terminals
        self._kill_grace_s = kill_grace_s
        self._drain_grace_s = drain_grace_s
        self._terminals: dict[str, _Terminal] = {}
        self._tg: TaskGroup | None = None
        self._launcher: Launcher = launcher or PlainLauncher()

    async def __aenter__(self) -> TerminalManager:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            await self.close_all()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def close_all(self) -> None:
        """Stops every terminal's process group and forgets them all."""
        terminals = list(self._terminals.values())
        self._terminals.clear()
        async with anyio.create_task_group() as tg:
            for term in terminals:
                tg.start_soon(self._discard, term)

    @property
    def terminal_ids(self) -> list[str]:
        return list(self._terminals)

    async def create(self, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_params(schema.CreateTerminalRequest, params, "terminal/create")
        if self._tg is None:
            raise RuntimeError("TerminalManager used outside its async with block")
        if len(self._terminals) >= self._max_terminals:
            raise JsonRpcError(
                INVALID_REQUEST,
                f"too many terminals ({self._max_terminals}); release one first",
            )
        cwd = await self._confine_cwd(req.cwd)
        env = dict(self._base_env)
        for var in req.env or []:
            env[var.name] = var.value
        limit = self._default_limit if req.output_byte_limit is None else req.output_byte_limit
        if limit < 0:
            raise JsonRpcError.invalid_params("outputByteLimit must not be negative")
        if not req.command.strip():
            raise JsonRpcError.invalid_params("command must not be empty")
        argv = _argv(req.command, req.args)
        terminal_id = f"term-{secrets.token_hex(6)}"
        try:
            launched = await self._launcher.launch(
                argv,
                leaf=terminal_id,
                cwd=cwd,
                env=env,
                stdin_pipe=False,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise JsonRpcError.invalid_params(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            ) from exc
        process = launched.process
        term = _Terminal(
            terminal_id=terminal_id,
            process=process,
            tree=launched.tree,
            leaf=launched.leaf,
            buffer=TailBuffer(min(limit, self._max_limit)),
        )
        self._terminals[term.terminal_id] = term
        self._tg.start_soon(self._supervise, term)
        log.info("terminal %s started pid %d: %s", term.terminal_id, process.pid, argv)
        return schema.CreateTerminalResponse(terminal_id=term.terminal_id).model_dump(
            by_alias=True, exclude_none=True
        )

    async def output(self, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_params(schema.TerminalOutputRequest, params, "terminal/output")
        term = self._get(req.terminal_id)
        done = term.exit_status is not None
        answer = schema.TerminalOutputResponse(
            output=term.buffer.text(final=done),
            truncated=term.buffer.truncated,
            exit_status=term.exit_status,
        )
        return answer.model_dump(by_alias=True, exclude_none=True)

    async def wait_for_exit(self, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_params(schema.WaitForTerminalExitRequest, params, "terminal/wait_for_exit")
        term = self._get(req.terminal_id)
        await term.exited.wait()
        assert term.exit_status is not None
        answer = schema.WaitForTerminalExitResponse(
            exit_code=term.exit_status.exit_code, signal=term.exit_status.signal
        )
        return answer.model_dump(by_alias=True, exclude_none=True)

    async def kill(self, params: dict[str, Any]) -> dict[str, Any]:
        """Stops the command's process group; the terminal stays for its output and status."""
        req = parse_params(schema.KillTerminalRequest, params, "terminal/kill")
        term = self._get(req.terminal_id)
        await self._stop_group(term)
        # The group is gone; the status follows within the output drain grace.
        await term.exited.wait()
        return {}

    async def release(self, params: dict[str, Any]) -> dict[str, Any]:
        """Kills the command if it still runs and forgets the terminal."""
        req = parse_params(schema.ReleaseTerminalRequest, params, "terminal/release")
        term = self._get(req.terminal_id)
        del self._terminals[req.terminal_id]
        with anyio.CancelScope(shield=True):
            await self._discard(term)
        return {}

    # Internals.

    def _get(self, terminal_id: str) -> _Terminal:
        term = self._terminals.get(terminal_id)
        if term is None:
            raise JsonRpcError(
                RESOURCE_NOT_FOUND, f"unknown terminal {terminal_id!r} (never created or released)"
            )
        return term

    async def _confine_cwd(self, raw: str | None) -> Path:
        if raw is None:
            return self._cwd
        given = Path(raw)
        if not given.is_absolute():
            given = self._cwd / given
        resolved = await anyio.Path(given).resolve()
        if not (resolved == self._cwd or resolved.is_relative_to(self._cwd)):
            raise JsonRpcError.invalid_params(
                f"terminal cwd {raw} is outside the session directory {self._cwd}"
            )
        if not await resolved.is_dir():
            raise JsonRpcError.invalid_params(f"terminal cwd {raw} is not a directory")
        return Path(resolved)

    async def _stop_group(self, term: _Terminal) -> None:
        with anyio.CancelScope(shield=True):
            await procgroup.stop_tree(
                term.process,
                term.tree,
                close_stdin=False,
                stdin_grace_s=0.0,
                term_grace_s=self._kill_grace_s,
            )

    async def _discard(self, term: _Terminal) -> None:
        await self._stop_group(term)
        term.scope.cancel()
        await term.finished.wait()
        self._launcher.forget(term.leaf)

    async def _supervise(self, term: _Terminal) -> None:
        try:
            with term.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, term)
                    returncode = await term.process.wait()
                    # A grandchild may hold the pipe open: take what the output has, briefly.
                    with anyio.move_on_after(self._drain_grace_s):
                        await term.output_done.wait()
                    term.exit_status = exit_status_of(returncode)
                    term.exited.set()
                    log.info("terminal %s ended: %s", term.terminal_id, term.exit_status)
        finally:
            with anyio.CancelScope(shield=True):
                await term.process.aclose()
            if term.exit_status is None:  # released or stopped before its exit was recorded
                assert term.process.returncode is not None
                term.exit_status = exit_status_of(term.process.returncode)
                term.exited.set()
            term.finished.set()

    async def _pump(self, term: _Terminal) -> None:
        stream = term.process.stdout
        assert stream is not None
        try:
            while True:
                chunk = await stream.receive(_READ_CHUNK)
                term.buffer.write(chunk)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass
        finally:
            term.output_done.set()


def _argv(command: str, args: list[str] | None) -> list[str]:
    """The command line to run; a bare command with spaces is handed to the shell.

    Agents send either ``command`` + ``args`` or a whole shell line in ``command``.
    """
    if args:
        return [command, *args]
    if any(ch.isspace() or ch in _SHELL_CHARS for ch in command):
        return ["/bin/sh", "-c", command]
    return [command]
