"""The pure parts of a task repository: what a repository may be, which credential request
matches it, which session an asking process belongs to, the remote's answer, the push's
refusals, the token cache's refresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vm_agent.common.redact import Redactor
from vm_agent.gitwork.broker import Candidate, Peer, TokenCache, session_of_peer
from vm_agent.gitwork.push import parse_ls_remote, refusal
from vm_agent.gitwork.run import GitSetup
from vm_agent.gitwork.spec import (
    RepositorySpec,
    check_branch,
    parse_credential_request,
    request_matches,
)

AUTHOR = {"name": "A", "email": "a@example.com"}


def spec(**kw: Any) -> RepositorySpec:
    fields = {
        "workspace_id": "ws-1",
        "url": "https://github.com/acme/widgets.git",
        "task_branch": "vm-agent/t-1",
        "author": AUTHOR,
    }
    return RepositorySpec.model_validate({**fields, **kw})


@pytest.mark.parametrize("name", ["main", "vm-agent/t-1", "release/1.2", "a_b+c", "x" * 200])
def test_plain_branches(name: str) -> None:
    assert check_branch(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-x",
        "--upload-pack=x",
        "a..b",
        "a//b",
        "a/",
        "a.",
        "a.lock",
        "a/.b",
        "HEAD",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a\\b",
        "a@{1}",
        "x" * 201,
        ".a",
        "/a",
    ],
)
def test_not_branches(name: str) -> None:
    with pytest.raises(ValueError):
        check_branch(name)


@pytest.mark.parametrize(
    "url",
    [
        "ssh://github.com/a/b",
        "file:///srv/a.git",
        "https://u:p@github.com/a/b",
        "https://github.com/",
        "https://github.com/a/b?x=1",
        "https://github.com/a/b#f",
        "https:///a/b",
        "https://github.com/a b",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        spec(url=url)


def test_spec_parts() -> None:
    s = spec(url="http://127.0.0.1:8080/acme/widgets.git")
    assert (s.scheme, s.host, s.path) == ("http", "127.0.0.1:8080", "acme/widgets")


@pytest.mark.parametrize(
    ("request_text", "why"),
    [
        ("protocol=https\nhost=github.com\npath=acme/widgets.git\n\n", None),
        ("protocol=https\nhost=GitHub.com\npath=acme/widgets\n\n", None),
        ("protocol=http\nhost=github.com\npath=acme/widgets.git\n\n", "protocol"),
        ("protocol=https\nhost=evil.example\npath=acme/widgets.git\n\n", "host"),
        ("protocol=https\nhost=github.com\n\n", "no path"),
        ("protocol=https\nhost=github.com\npath=acme/gadgets.git\n\n", "path"),
        ("protocol=https\nhost=github.com\npath=acme/widgets.git/x\n\n", "path"),
    ],
)
def test_request_matches(request_text: str, why: str | None) -> None:
    got = request_matches(spec(), parse_credential_request(request_text))
    assert (got is None) if why is None else (got is not None and why in got)


def test_a_request_that_is_not_one() -> None:
    with pytest.raises(ValueError):
        parse_credential_request("garbage\n\n")


S = spec()
A = Path("/sys/fs/cgroup/d/sessions/a")
B = Path("/sys/fs/cgroup/d/sessions/b")


@pytest.mark.parametrize(
    ("peer", "candidates", "expected"),
    [
        # in session a's leaf, as its user: a
        (Peer(1, 100, A / "git-1"), [Candidate("a", 100, A, S), Candidate("b", 100, B, S)], "a"),
        # the right cgroup, another uid: nobody
        (Peer(1, 101, A / "git-1"), [Candidate("a", 100, A, S)], None),
        # the same uid, another session's cgroup (a sibling's name is a prefix): nobody
        (Peer(1, 100, Path(f"{A}x/leaf")), [Candidate("a", 100, A, S)], None),
        # a cgroup not yet made (the session never launched): nobody
        (Peer(1, 100, A / "x"), [Candidate("a", 100, None, S)], None),
        # without cgroups: the uid, when it is one session's alone
        (Peer(1, 100, None), [Candidate("a", 100, None, S)], "a"),
        (Peer(1, 100, None), [Candidate("a", 100, None, S), Candidate("b", 100, None, S)], None),
        (Peer(1, 0, None), [Candidate("a", 100, None, S)], None),
    ],
)
def test_session_of_peer(peer: Peer, candidates: list[Candidate], expected: str | None) -> None:
    found = session_of_peer(peer, candidates)
    assert (found.session_id if found else None) == expected


def test_ls_remote() -> None:
    out = "ref: refs/heads/trunk\tHEAD\nabc\tHEAD\ndef\trefs/heads/vm-agent/t\n"
    remote = parse_ls_remote(out)
    assert remote.default_branch == "trunk"
    assert remote.heads == {"trunk": "abc", "vm-agent/t": "def"}


@pytest.mark.parametrize(
    ("task", "base", "default", "why"),
    [
        ("vm-agent/t", "main", "main", None),
        ("main", "dev", "main", "default branch"),
        ("dev", "dev", "main", "base branch"),
        ("main", None, "main", "default branch"),
        ("main", None, None, None),
    ],
)
def test_push_refusal(task: str, base: str | None, default: str | None, why: str | None) -> None:
    got = refusal(task, base, default)
    assert (got is None) if why is None else (got is not None and why in got)


@pytest.mark.anyio
async def test_the_token_cache_asks_again_only_near_expiry() -> None:
    now = [1000.0]
    minted: list[str] = []

    async def mint(ws: str) -> tuple[str, float]:
        minted.append(ws)
        return f"plainvalue{len(minted)}x{ws}", now[0] + 3600  # no GitHub shape: by value

    redactor = Redactor()
    cache = TokenCache(mint, redactor, clock=lambda: now[0], refresh_before_s=300)
    first = await cache.get("ws-1")
    assert await cache.get("ws-1") == first
    now[0] += 3600 - 301
    assert await cache.get("ws-1") == first
    now[0] += 2
    second = await cache.get("ws-1")
    assert second != first and minted == ["ws-1", "ws-1"]
    await cache.get("ws-2")
    assert minted[-1] == "ws-2"
    assert first not in redactor.redact(f"a log line with {first} and {second}")
    assert second not in redactor.redact(f"a log line with {second}")


def test_the_helper_command_is_quoted_for_the_shell() -> None:
    setup = GitSetup(Path("/run/a b/s.sock"), ("/opt/x y/helper",), Path("/m"))
    assert setup.helper_config() == "!'/opt/x y/helper' --socket '/run/a b/s.sock'"
