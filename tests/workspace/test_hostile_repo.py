"""A hostile repository's config runs no program when a viewer looks at it (real git).

Each vector is first shown to work with a plain git on the same repository (so the test
can fail), then status, diff and log through ``WorkspaceGit`` run none of them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.server.test_workspace import GIT_ID, git, make_repo
from vm_agent.workspace.git import WorkspaceGit

pytestmark = pytest.mark.anyio


def _script(bin_dir: Path, name: str, marks: Path) -> str:
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\ntouch {marks}/{name}\ncat "$@" 2>/dev/null || cat\n')
    path.chmod(0o755)
    return str(path)


def _hostile(tmp_path: Path) -> tuple[Path, Path]:
    repo, bin_dir, marks = tmp_path / "ws" / "repo", tmp_path / "bin", tmp_path / "marks"
    bin_dir.mkdir()
    marks.mkdir()
    make_repo(repo)
    hooks = repo / ".git" / "evil-hooks"
    hooks.mkdir()
    for hook in ("post-index-change", "pre-auto-gc", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {marks}/hook\n")
        (hooks / hook).chmod(0o755)
    settings = {
        "core.fsmonitor": _script(bin_dir, "fsmonitor", marks),
        "filter.evil.clean": _script(bin_dir, "filter", marks),
        "filter.evil.smudge": _script(bin_dir, "filter", marks),
        "filter.evil.required": "true",
        "diff.evil.textconv": _script(bin_dir, "textconv", marks),
        "diff.external": _script(bin_dir, "external", marks),
        "core.pager": _script(bin_dir, "pager", marks),
        "pager.status": "true",
        "core.hooksPath": str(hooks),
        "log.showSignature": "true",
        "gpg.program": _script(bin_dir, "gpg", marks),
    }
    for key, value in settings.items():
        git(repo, "config", key, value)
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")
    (repo / "a.txt").write_text("a\nchanged\n")
    return repo, marks


def _plain(repo: Path, *args: str) -> None:
    env = {**os.environ, **GIT_ID, "GIT_PAGER": "", "PAGER": ""}
    subprocess.run(
        ["git", "-c", f"safe.directory={repo}", "-p", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        check=False,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


async def test_the_vectors_are_real_with_plain_git(tmp_path: Path) -> None:
    repo, marks = _hostile(tmp_path)
    _plain(repo, "status")
    _plain(repo, "diff", "HEAD")
    _plain(repo, "diff", "--no-ext-diff", "HEAD")
    _plain(repo, "add", "a.txt")
    ran = {p.name for p in marks.iterdir()}
    # (A pager runs only on a terminal; it stays in the config, overridden all the same.)
    assert {"fsmonitor", "filter", "textconv", "external", "hook"} <= ran, ran


async def test_looking_runs_none_of_them(tmp_path: Path) -> None:
    repo, marks = _hostile(tmp_path)
    looking = WorkspaceGit(repo, launcher=None, env={"PATH": os.environ["PATH"]})
    status = await looking.status()
    assert {"index": " ", "worktree": "M", "path": "a.txt"} in status["entries"]
    diff = await looking.diff(None)
    assert "+changed" in diff["diff"]
    assert (await looking.diff(None, stat_only=True))["files"]
    log = await looking.log(None, 10)
    assert [c["subject"] for c in log["commits"]] == ["second", "first"]
    assert sorted(p.name for p in marks.iterdir()) == []


async def test_a_gitfile_or_linked_git_dir_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    make_repo(elsewhere)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".git").write_text(f"gitdir: {elsewhere}/.git\n")
    looking = WorkspaceGit(ws, launcher=None, env={"PATH": os.environ["PATH"]})
    with pytest.raises(Exception, match="not a directory"):
        await looking.status()
    (ws / ".git").unlink()
    (ws / ".git").symlink_to(elsewhere / ".git")
    with pytest.raises(Exception, match="not a directory"):
        await looking.log(None, 5)


async def test_output_and_time_are_bounded(tmp_path: Path) -> None:
    repo = tmp_path / "ws" / "repo"
    make_repo(repo)
    (repo / "a.txt").write_text("x" * 300_000 + "\n")
    looking = WorkspaceGit(
        repo, launcher=None, env={"PATH": os.environ["PATH"]}, max_output_bytes=4096
    )
    diff = await looking.diff(None)
    assert diff["truncated"] and len(diff["diff"].encode()) <= 4096
