"""Which commands the agent users can run: the pure part as tables, the check for real."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.containment.pool import require_root
from vm_agent.containment.runnable import (
    Unrunnable,
    ancestors,
    chain_to_check,
    check_runnable,
    interpreter_of,
    unrunnable_agents,
)

NOBODY = 65534


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/bin/env", ["/usr", "/usr/bin", "/usr/bin/env"]),
        ("/x", ["/x"]),
        ("/", []),
    ],
)
def test_ancestors(path: str, expected: list[str]) -> None:
    assert ancestors(path) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"#!/root/.venv/bin/python\n", "/root/.venv/bin/python"),
        (b"#! /usr/bin/env node\n", "/usr/bin/env"),
        (b"#!python\n", None),  # relative: exec would fail anyway, not our question
        (b"#!\n", None),
        (b"\x7fELF\x02", None),
        (b"", None),
    ],
)
def test_interpreter_of(line: bytes, expected: str | None) -> None:
    assert interpreter_of(line) == expected


def test_the_chain_walks_the_name_the_link_target_and_the_interpreter() -> None:
    chain = chain_to_check(
        "/opt/a/bin/x", "/root/b/x", "/root/py/bin/python", "/root/py/bin/python"
    )
    assert chain == [
        "/opt", "/opt/a", "/opt/a/bin",  # the name's directories; the link itself is followed
        "/root", "/root/b", "/root/b/x", "/root/py", "/root/py/bin", "/root/py/bin/python",
    ]  # fmt: skip


@pytest.fixture
def reachable(tmp_path: Path):
    """A 0755 directory below /tmp (tmp_path's own ancestors may be 0700)."""
    require_root()
    base = Path(f"/tmp/vmat-runnable-{os.getpid()}")
    base.mkdir(mode=0o755, exist_ok=True)
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _program(path: Path, text: str = "#!/bin/sh\nexit 0\n", mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_program_anyone_may_run_passes(reachable: Path) -> None:
    program = _program(reachable / "bin" / "agent")
    assert check_runnable(str(program), {}, NOBODY, NOBODY) is None


def test_a_program_in_a_closed_directory_names_the_directory(reachable: Path) -> None:
    closed = reachable / "home"
    program = _program(closed / "bin" / "agent")
    closed.chmod(0o700)
    assert check_runnable(str(program), {}, NOBODY, NOBODY) == Unrunnable(
        program=str(program), blocked=str(closed)
    )
    # the daemon (root) could run it: the check is about the agent users
    assert check_runnable(str(program), {}, 0, 0) is None


def test_a_symlink_into_a_closed_directory_is_refused(reachable: Path) -> None:
    # a venv's bin/python over pyenv under /root: the link is reachable, its target is not
    closed = reachable / "pyenv"
    target = _program(closed / "python3.11")
    closed.chmod(0o700)
    link = reachable / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True, mode=0o755)
    link.symlink_to(target)
    why = check_runnable(str(link), {}, NOBODY, NOBODY)
    assert why is not None and why.blocked == str(closed)


def test_a_script_whose_interpreter_is_closed_is_refused(reachable: Path) -> None:
    closed = reachable / "private"
    interpreter = _program(closed / "python")
    closed.chmod(0o700)
    script = _program(reachable / "bin" / "agent-acp", f"#!{interpreter}\n")
    why = check_runnable(str(script), {}, NOBODY, NOBODY)
    assert why is not None and why.blocked == str(closed)
    assert str(closed) in why.describe()


def test_a_file_without_the_execute_bit_is_refused(reachable: Path) -> None:
    program = _program(reachable / "bin" / "agent", mode=0o744)
    why = check_runnable(str(program), {}, NOBODY, NOBODY)
    assert why == Unrunnable(program=str(program), blocked=str(program))
    assert "not executable" in why.describe()


def test_agents_looked_up_on_path_and_missing_ones_left_out(reachable: Path) -> None:
    _program(reachable / "open" / "good-acp")
    closed = reachable / "closed"
    _program(closed / "bad-acp")
    closed.chmod(0o700)
    env = {"PATH": f"{reachable / 'open'}:{closed}"}
    found = unrunnable_agents(
        {"good": ["good-acp"], "bad": ["bad-acp", "--acp"], "absent": ["no-such-acp"]},
        env,
        NOBODY,
        NOBODY,
    )
    assert set(found) == {"bad"}
    assert str(closed) in found["bad"]
