"""What a test needs from the machine, and the one rule for when it is not there.

A test that needs something the machine lacks (root, a tool, a kernel feature) skips with
the reason on a developer's machine and fails under CI (`CI` set): CI runs as root on
Debian 12 with what `.ci/run` installs, so there a missing capability is a broken stage,
never a reason for a test to pass without running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skips with `reason`, or fails with it under CI."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        missing(f"needs root ({why}); CI runs as root")


def require_capability(bit: int, name: str) -> None:
    """A capability in this process's effective set (`bit` as in linux/capability.h)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            if int(line.split()[1], 16) >> bit & 1:
                return
            break
    missing(f"needs {name} (CI runs as root, which has it)")


CAP_NET_ADMIN = 12


def require_tool(name: str, package: str) -> str:
    """The tool's path; `package` is the Debian package that has it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found (Debian package {package}; .ci/run installs it)")
    return path


def require_netns() -> str:
    """`unshare`'s path, once a network namespace was made with it (as the jail does)."""
    unshare = require_tool("unshare", "util-linux")
    try:
        done = subprocess.run(
            [unshare, "--net", "--map-root-user", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        missing(f"cannot make a network namespace: {exc}")
    if done.returncode != 0:
        missing(f"cannot make a network namespace: {done.stderr.strip()}")
    return unshare
