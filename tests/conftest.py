"""Shared test configuration: async tests run on anyio's own pytest plugin, and the tests'
processes get a HOME of their own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HOME: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """A HOME of the test run's own, with an empty ``.bashrc``: the shells that terminal
    tests open (as the daemon's user when agents run as it) would otherwise run the
    machine's rc files, and one killed mid-way (a test stopping its session) can leave
    state that hangs every later shell (pyenv's rehash lock, on these machines). The cache
    (the VM image) stays where the machine keeps it."""
    if _HOME:
        return
    os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    home = Path(tempfile.mkdtemp(prefix="vm-agent-test-home-"))
    home.chmod(0o755)
    (home / ".bashrc").write_text("")
    os.environ["HOME"] = str(home)
    _HOME.append(home)


def pytest_unconfigure(config: pytest.Config) -> None:
    for home in _HOME:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
