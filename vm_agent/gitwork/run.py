"""Running git for a task's repository: as the agent user through the session's
``Launcher`` (a leaf of its cgroup), or as the daemon on its own mirror; bounded in time
(the whole tree is killed) with stderr kept short for the reasons people read."""

from __future__ import annotations

import secrets
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
from anyio.abc import ByteReceiveStream

from vm_agent.process import procgroup
from vm_agent.process.launch import Launcher, PlainLauncher

_STDERR_BYTES = 8192
_CHUNK = 65536
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class GitFailed(Exception):
    """git did not succeed; ``str`` says what it said (for a person, no secret in it)."""


@dataclass(frozen=True, slots=True)
class GitSetup:
    """How the daemon wires git: the credential socket, the helper command, its mirrors."""

    socket_path: Path
    helper: tuple[str, ...]  # the helper's argv before ``--socket PATH get``
    mirrors_dir: Path
    timeout_s: float = 600.0
    max_bundle_bytes: int = 2 * 1024**3

    def helper_config(self) -> str:
        """``credential.helper``'s value: a shell command (git appends the action)."""
        words = (*self.helper, "--socket", str(self.socket_path))
        return "!" + " ".join(shlex.quote(w) for w in words)


@dataclass(frozen=True, slots=True)
class Ran:
    returncode: int | None  # None: killed at the time bound, or its output past the bound
    stdout: bytes
    stderr: str

    def said(self) -> str:
        text = " ".join(self.stderr.split())
        return text[-600:] or f"exit status {self.returncode}"


async def _collect(
    stream: ByteReceiveStream | None, limit: int, sink: BinaryIO | None
) -> tuple[bytes, bool]:
    if stream is None:
        return b"", False
    data = bytearray()
    size = 0
    try:
        while True:
            chunk = await stream.receive(_CHUNK)
            size += len(chunk)
            if size > limit:
                return bytes(data), True
            if sink is not None:
                await anyio.to_thread.run_sync(sink.write, chunk)
            else:
                data += chunk
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    return bytes(data), False


async def run_git(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    launcher: Launcher | None = None,
    timeout_s: float = 600.0,
    max_output: int = 4 * 1024 * 1024,
    sink: BinaryIO | None = None,
) -> Ran:
    """``argv`` to its end; stdout into ``sink`` when given (up to ``max_output``)."""
    launcher = launcher or PlainLauncher()
    launched = await launcher.launch(
        list(argv),
        leaf=f"git-{secrets.token_hex(4)}",
        cwd=cwd,
        env=env,
        stdin_pipe=False,
        stderr=subprocess.PIPE,
    )
    process = launched.process
    stdout = stderr = b""
    over = False
    returncode: int | None = None
    try:
        with anyio.move_on_after(timeout_s):
            async with anyio.create_task_group() as tg:

                async def err() -> None:
                    nonlocal stderr
                    stderr, _ = await _collect(process.stderr, _STDERR_BYTES, None)

                tg.start_soon(err)
                stdout, over = await _collect(process.stdout, max_output, sink)
                if over:
                    tg.cancel_scope.cancel()
            if not over:
                returncode = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            await procgroup.stop_tree(
                process, launched.tree, close_stdin=False, stdin_grace_s=0.0, term_grace_s=0.5
            )
            await process.aclose()
            launcher.forget(launched.leaf)
    return Ran(returncode, stdout, stderr.decode("utf-8", "replace"))


def base_env(home: str, path: str = DEFAULT_PATH) -> dict[str, str]:
    """git with no system or global config and never a prompt."""
    return {
        "PATH": path,
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
    }
