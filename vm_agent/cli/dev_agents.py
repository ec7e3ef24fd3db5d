"""The agents of ``vm-agent dev``: the fake agent in a few scenarios, runnable by whoever runs them.

As root, dev runs agents as the pool users, who may not reach this interpreter (a venv
over pyenv under /root) or this checkout. Then the fake agent runs on an interpreter they
can reach, from a copy of what it imports in a directory they can read, so the first
prompt of the quick start works as root as it does as a normal user.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vm_agent.process.catalog import fake_agent_command
from vm_agent.runtime.settings import ENV_PREFIX

# Where the fake agent keeps transcripts when it runs as a pool user (the dev dir is 0700).
AGENT_HOME_STATE = "~/.vm-agent-fake-agent"
# Root-owned and readable by all: the agent users' copy of the fake agent's code.
SHARED_CODE_ROOT = Path("/var/lib/vm-agent-dev")
# Someone no file here belongs to, with no groups: what any agent user can reach, it can.
_NOBODY = 65534
# What the fake agent imports from outside the standard library (it imports no C code).
_AGENT_PACKAGES = ("anyio", "sniffio", "idna", "typing_extensions.py")
_BOOT = (
    "import sys; sys.path[:0] = {paths!r}; "
    "from vm_agent.fake_agent import main; sys.exit(main(sys.argv[1:]))"
)


class DevAgentsError(RuntimeError):
    """The fake agent cannot be made runnable by the agent users; the message says what to do."""


@dataclass(frozen=True, slots=True)
class AgentPython:
    """How the fake agent is started: ``python -I -c BOOT`` with ``paths`` first on sys.path."""

    python: str
    paths: tuple[str, ...]

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-I", "-c", _BOOT.format(paths=list(self.paths)), *args]


def agents_run_as_pool() -> bool:
    """Whether the daemon will run agents as pool users (it is root, not told otherwise)."""
    from vm_agent.containment.users import RunAs, decide_run_as

    as_root = os.environ.get(f"{ENV_PREFIX}AGENTS_AS_ROOT", "").lower() in ("1", "true", "yes")
    return decide_run_as(os.geteuid(), as_root).mode is RunAs.POOL


def _same_python(python: str) -> bool:
    """``python`` runs for anyone and is this Python's version (the copied code is for it)."""
    from vm_agent.containment.runnable import check_runnable

    try:
        if check_runnable(python, {"PATH": "/usr/bin:/bin"}, _NOBODY, _NOBODY) is not None:
            return False
        done = subprocess.run(
            [python, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.stdout.strip() == "{}.{}".format(*sys.version_info[:2])


def copy_agent_code(target: Path) -> None:
    """vm_agent and the fake agent's packages into ``target`` (replaced whole), 0755/0644."""
    import vm_agent

    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    target.parent.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    site = Path(sysconfig.get_paths()["purelib"])
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(vm_agent.__file__).parent, staging / "vm_agent", ignore=ignore)
    for name in _AGENT_PACKAGES:
        source = site / name
        if source.is_dir():
            shutil.copytree(source, staging / name, ignore=ignore)
        elif source.exists():
            shutil.copy(source, staging / name)
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def shared_code_dir(dev_dir: Path) -> Path:
    """One copy per dev directory, so two dev instances never share (or clobber) one."""
    digest = hashlib.sha256(str(dev_dir.resolve()).encode()).hexdigest()[:16]
    return SHARED_CODE_ROOT / digest


def agent_python(dev_dir: Path) -> AgentPython:
    """The fake agent's interpreter and paths, as the agent users can run them.

    As a normal user, or with agents as root: this interpreter and its own paths. As root
    with pool users: this interpreter if anyone may run it, else the system's python3 of
    the same version; and a copy of the code, since the checkout and the venv may be out of
    their reach too.
    """
    if not agents_run_as_pool():
        return AgentPython(python=sys.executable, paths=())
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        if _same_python(python):
            break
    else:
        raise DevAgentsError(
            f"the agent users cannot run {sys.executable} (is it under /root?) and there is "
            f"no /usr/bin/python3 {sys.version_info[0]}.{sys.version_info[1]}: install "
            "python3 from the system's packages, make a venv from an interpreter outside "
            f"/root, or set {ENV_PREFIX}AGENTS_AS_ROOT=1 (agents uncontained)"
        )
    target = shared_code_dir(dev_dir)
    try:
        copy_agent_code(target)
    except OSError as exc:
        raise DevAgentsError(f"cannot copy the fake agent's code to {target}: {exc}") from exc
    return AgentPython(python=python, paths=(str(target),))


def dev_agents(
    dev_dir: Path, state_dir: str | None = None, python: AgentPython | None = None
) -> dict[str, list[str]]:
    """The fake agent in a few scenarios; transcripts under the dev dir, so sessions load."""
    state = state_dir or str(dev_dir / "fake-agent")

    def fake(*args: str) -> list[str]:
        if python is None or not python.paths:
            return list(fake_agent_command(*args))
        return python.argv(*args)

    return {
        "fake": fake("--scenario", "echo", "--state-dir", state),
        "fake-slow": fake(
            "--scenario", "slow", "--chunks", "20", "--delay-ms", "300", "--state-dir", state
        ),
        "fake-tools": fake("--scenario", "tools", "--state-dir", state),
        # Crashes in the first prompt only, then loads the session again (a recovery).
        "fake-crash": fake("--scenario", "crash-mid-prompt", "--once", "--state-dir", state),
    }


def write_agents_file(path: Path, agents: dict[str, list[str]]) -> None:
    # JSON strings are valid TOML basic strings (same escapes), so quoting is exact.
    lines = ["# written by `vm-agent dev`; rewritten at every start", ""]
    for name, command in agents.items():
        quoted = ", ".join(json.dumps(arg) for arg in command)
        lines += [f"[agents.{name}]", f"command = [{quoted}]", ""]
    path.write_text("\n".join(lines))
