"""Where a session may work: tables of cases (pure)."""

from __future__ import annotations

from pathlib import PurePosixPath as P

import pytest

from vm_agent.containment.paths import WorkdirRefused, check_workdir, parse_roots

ROOTS = (P("/srv/workspaces"), P("/data/ws"))
FORBIDDEN = (P("/var/lib/vm-agent"), P("/srv/workspaces/.state"), P("/data/ws/inner/state"))


@pytest.mark.parametrize(
    ("cwd", "root", "parts"),
    [
        ("/srv/workspaces/alice", "/srv/workspaces", ("alice",)),
        ("/srv/workspaces/alice/proj/", "/srv/workspaces", ("alice", "proj")),
        ("/data/ws/x", "/data/ws", ("x",)),
        ("//srv//workspaces/./a", "/srv/workspaces", ("a",)),
        ("/srv/workspaces/a/b/../c", "/srv/workspaces", ("a", "c")),
    ],
)
def test_accepted(cwd: str, root: str, parts: tuple[str, ...]) -> None:
    workdir = check_workdir(cwd, ROOTS, FORBIDDEN)
    assert workdir.root == P(root) and workdir.parts == parts


@pytest.mark.parametrize(
    ("cwd", "message"),
    [
        ("/", "not under a workspace root"),
        ("/var/lib/vm-agent", "not under a workspace root"),
        ("/srv/workspaces/.state", "overlaps the daemon's own files"),
        ("/data/ws/inner", "overlaps"),  # contains the daemon's files
        ("/srv/workspaces", "is a workspace root itself"),
        ("/srv/workspaces/", "is a workspace root itself"),
        ("/srv/workspaces/a/..", "is a workspace root itself"),
        ("/srv/workspaces/../etc", "not under a workspace root"),
        ("/srv/workspaces/.state/x", "overlaps"),
        ("/srv/workspacesX/a", "not under a workspace root"),
        ("relative/path", "absolute"),
        ("", "non-empty"),
        ("/srv/workspaces/a\x00b", "NUL"),
    ],
)
def test_refused(cwd: str, message: str) -> None:
    with pytest.raises(WorkdirRefused, match=message):
        check_workdir(cwd, ROOTS, FORBIDDEN)


def test_no_roots_means_no_sessions() -> None:
    with pytest.raises(WorkdirRefused, match="no workspace roots"):
        check_workdir("/srv/workspaces/a", (), ())


@pytest.mark.parametrize(
    ("value", "roots"),
    [
        ("/srv/workspaces", (P("/srv/workspaces"),)),
        ("/a:/b/", (P("/a"), P("/b"))),
        ("/a::/b", (P("/a"), P("/b"))),
    ],
)
def test_parse_roots(value: str, roots: tuple[P, ...]) -> None:
    assert parse_roots(value) == roots


@pytest.mark.parametrize("value", ["/", "//", "rel", "", ":"])
def test_parse_roots_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_roots(value)
