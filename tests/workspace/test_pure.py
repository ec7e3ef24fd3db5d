"""The workspace's pure parts: which paths a viewer may name, what git is told, its output."""

from __future__ import annotations

import pytest

from vm_agent.workspace import gitargs as g
from vm_agent.workspace.paths import PathRefused, parts_of


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("", ()),
        (".", ()),
        ("a", ("a",)),
        ("a/b/c.txt", ("a", "b", "c.txt")),
        ("./a//b/", ("a", "b")),
        ("a/./b", ("a", "b")),
        ("..x/y..", ("..x", "y..")),
    ],
)
def test_paths_a_viewer_may_name(raw: str, parts: tuple[str, ...]) -> None:
    assert parts_of(raw) == parts


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/etc/passwd", "relative"),
        ("..", "'..'"),
        ("a/../../b", "'..'"),
        ("a/..", "'..'"),
        ("a\x00b", "NUL"),
        ("a/" * 3000, "longer"),
    ],
)
def test_paths_refused(raw: str, why: str) -> None:
    with pytest.raises(PathRefused, match=why):
        parts_of(raw)


def test_every_program_a_repository_config_names_is_emptied() -> None:
    names = [
        "core.bare",
        "filter.lfs.clean",
        "filter.lfs.smudge",
        "filter.lfs.process",
        "filter.lfs.required",
        "filter.a.b.clean",  # a driver name with dots
        "diff.evil.textconv",
        "diff.evil.command",
        "diff.evil.xfuncname",  # a regex, not a program
        "merge.ours.driver",
        "protocol.ext.allow",
        "FILTER.X.CLEAN",  # keys are case-insensitive
        "user.name",
    ]
    assert g.driver_overrides(names) == [
        "filter.lfs.clean=",
        "filter.lfs.smudge=",
        "filter.lfs.process=",
        "filter.lfs.required=false",
        "filter.a.b.clean=",
        "diff.evil.textconv=",
        "diff.evil.command=",
        "merge.ours.driver=",
        "protocol.ext.allow=never",
        "FILTER.X.CLEAN=",
    ]


def test_git_is_pinned_to_the_workspace() -> None:
    env = g.git_env({"PATH": "/bin", "HOME": "/h", "SECRET": "x"}, "/ws/p", "/ws")
    assert "SECRET" not in env
    assert (env["GIT_DIR"], env["GIT_WORK_TREE"], env["GIT_CEILING_DIRECTORIES"]) == (
        "/ws/p/.git",
        "/ws/p",
        "/ws",
    )
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_ALLOW_PROTOCOL"] == ""
    argv = g.git_argv("/ws/p", ["filter.x.clean="], ["status"])
    assert argv[:2] == ["git", "--no-pager"] and argv[-1] == "status"
    assert "safe.directory=/ws/p" in argv and "core.fsmonitor=false" in argv
    assert "filter.x.clean=" in argv


@pytest.mark.parametrize("ref", ["main", "origin/main", "HEAD~2", "v1.0^{commit}", "a1b2c3d"])
def test_bases_a_viewer_may_name(ref: str) -> None:
    assert g.check_ref(ref) == ref


@pytest.mark.parametrize("ref", ["--output=/tmp/x", "-p", "a..b", "main b", "", "x" * 201])
def test_bases_refused(ref: str) -> None:
    with pytest.raises(ValueError, match="not a ref"):
        g.check_ref(ref)


def test_git_output_parsed() -> None:
    status = g.parse_status(b"## main...origin/main [ahead 1]\0 M a.txt\0?? new file\0A  b\0")
    assert status == {
        "branch": "main...origin/main [ahead 1]",
        "entries": [
            {"index": " ", "worktree": "M", "path": "a.txt"},
            {"index": "?", "worktree": "?", "path": "new file"},
            {"index": "A", "worktree": " ", "path": "b"},
        ],
    }
    log = g.parse_log(
        b"c1\x1fp1 p2\x1fAnn\x1fa@x\x1f1700000000\x1fmerge: it\0\nc0\x1f\x1fB\x1fb@x\x1fz\x1fs\0"
    )
    assert log == [
        {"commit": "c1", "parents": ["p1", "p2"], "author": "Ann", "email": "a@x",
         "time": 1700000000, "subject": "merge: it"},
        {"commit": "c0", "parents": [], "author": "B", "email": "b@x", "time": None,
         "subject": "s"},
    ]  # fmt: skip
    assert g.parse_numstat(b"3\t1\ta.txt\n-\t-\timg.png\n") == [
        {"path": "a.txt", "added": 3, "deleted": 1},
        {"path": "img.png", "added": None, "deleted": None},
    ]
