"""Whether the agent users can run a command: said at start, not as an exit 126 at a prompt.

A program the daemon (root) can run may still be out of an agent user's reach: the
interpreter of a virtual environment made with pyenv lives under /root, a script's `#!`
names such an interpreter, an npm global sits in a 0700 home. The decision of what to
check is pure (`chain_to_check`, `interpreter_of`); one ``sh`` started as the agent user
does the checking (``test -x`` is access(2) with that user's ids: every directory on the
way must be searchable, the file executable).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from vm_agent.containment.spawn import resolve_program

# Prints the first path the user cannot pass, and fails; succeeds when every one passes.
_CHECK = 'for p; do test -x "$p" || { printf "%s" "$p"; exit 1; }; done'
_SH = "/bin/sh"
_SHEBANG_MAX = 256


@dataclass(frozen=True, slots=True)
class Unrunnable:
    """Why a user cannot run a command (``blocked``: the first path in the way)."""

    program: str
    blocked: str

    def describe(self) -> str:
        if self.blocked == self.program:
            return f"{self.program} is not executable by them"
        return (
            f"{self.program} is out of their reach "
            f"({self.blocked} is not searchable or executable by them)"
        )


def ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b", "/a/b/c"]`` (the root itself needs no check)."""
    parts = PurePosixPath(path).parts[1:]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def interpreter_of(first_line: bytes) -> str | None:
    """The interpreter a ``#!`` line names (an absolute path), or None."""
    if not first_line.startswith(b"#!"):
        return None
    words = first_line[2:].strip().split()
    if not words:
        return None
    interpreter = words[0].decode(errors="replace")
    return interpreter if interpreter.startswith("/") else None


def chain_to_check(
    program: str, real: str, interpreter: str | None, real_interp: str | None
) -> list[str]:
    """Every path exec will pass through, in order, without repeats.

    The directories of the path as named (they are walked), then where its symlinks lead
    (the kernel opens that: a refusal names the real directory in the way), then the same
    for a script's interpreter.
    """
    chain: dict[str, None] = {}
    for named, target in ((program, real), (interpreter, real_interp)):
        if named and target:
            chain.update(dict.fromkeys(ancestors(named)[:-1]))
            chain.update(dict.fromkeys(ancestors(target)))
    return list(chain)


def _first_line(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.readline(_SHEBANG_MAX)
    except OSError:
        return b""


def check_runnable(argv0: str, env: Mapping[str, str], uid: int, gid: int) -> Unrunnable | None:
    """None if the user ``uid``/``gid`` can exec ``argv0`` (looked up on ``env``'s PATH).

    ``FileNotFoundError`` if there is no such program at all (not installed).
    """
    program = resolve_program(argv0, env)
    real = os.path.realpath(program)
    interpreter = interpreter_of(_first_line(real))
    real_interp = os.path.realpath(interpreter) if interpreter else None
    chain = chain_to_check(program, real, interpreter, real_interp)
    done = subprocess.run(
        [_SH, "-c", _CHECK, "vm-agent-runnable", *chain],
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode == 0:
        return None
    return Unrunnable(program=program, blocked=done.stdout.strip() or program)


def unrunnable_agents(
    commands: Mapping[str, Sequence[str]], env: Mapping[str, str], uid: int, gid: int
) -> dict[str, str]:
    """Agent name -> why its users cannot run it; agents not installed are left out."""
    found: dict[str, str] = {}
    for name, argv in commands.items():
        if not argv:
            continue
        try:
            why = check_runnable(argv[0], env, uid, gid)
        except FileNotFoundError:
            continue  # not installed here: a start says so when someone asks for it
        except (OSError, subprocess.SubprocessError) as exc:
            found[name] = f"cannot check: {exc}"
            continue
        if why is not None:
            found[name] = why.describe()
    return found
