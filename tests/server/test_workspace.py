"""workspace/*: a session's files and git view over the real viewer API, with the fake agent."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.server.harness import Client, Daemon, RpcError, daemon, fake, text
from vm_agent.fake_agent.tools import FILE_CONTENT, OUTPUT_FILE
from vm_agent.workspace.files import MAX_WRITE_BYTES

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GIT_ID = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ID}
    done = subprocess.run(
        ["git", "-c", f"safe.directory={repo}", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def make_repo(repo: Path) -> str:
    """A repository with two commits on main; the first commit's id."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "second")
    return first


async def _err(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as err:
        await client.call(method, params)
    return err.value


async def _run_tools(d: Daemon, v: Client, sid: str) -> None:
    """The fake agent's `tools` turn: it writes OUTPUT_FILE through fs/* (allowed here)."""
    await v.call("session/subscribe", {"session_id": sid})
    await v.send(
        {
            "jsonrpc": "2.0",
            "id": "p",
            "method": "session/prompt",
            "params": {"session_id": sid, "prompt": text("go"), "prompt_id": "p1"},
        }
    )
    with anyio.fail_after(30):
        while True:
            msg = await v.recv()
            params = msg.get("params") or {}
            if msg.get("method") == "session/event" and params["type"] == "permission.requested":
                request_id = params["data"]["request_id"]
                break
        answer = {"session_id": sid, "request_id": request_id, "option_id": "allow"}
        await v.send(
            {"jsonrpc": "2.0", "id": "r", "method": "permission/respond", "params": answer}
        )
        done = await v.answer("p")
    assert done["result"]["outcome"] == "completed", done


async def test_files_and_the_diff_after_the_agents_edit(tmp_path: Path) -> None:
    async with daemon(tmp_path, [fake("tools")], max_frame_bytes=4 * 1024 * 1024) as d:
        first = make_repo(d.workdir)
        async with d.viewer() as v:
            sid = (await d.start(v, "tools"))["session_id"]
            await _run_tools(d, v, sid)
            call = v.call
            listed = await call("workspace/list", {"session_id": sid})
            names = [e["name"] for e in listed["entries"]]
            assert names == [".git", "README.md", "a.txt", OUTPUT_FILE]
            assert {e["type"] for e in listed["entries"]} == {"dir", "file"}
            got = await call("workspace/read", {"session_id": sid, "path": OUTPUT_FILE})
            assert got["content"] == FILE_CONTENT and got["encoding"] == "utf-8" and got["eof"]
            ranged = await call(
                "workspace/read", {"session_id": sid, "path": "README.md", "offset": 1, "length": 3}
            )
            assert (ranged["content"], ranged["size"], ranged["eof"]) == ("ell", 6, False)
            st = await call("workspace/stat", {"session_id": sid, "path": "a.txt"})
            assert (st["type"], st["size"]) == ("file", 2)

            status = await call("workspace/git_status", {"session_id": sid})
            assert status["branch"].startswith("main")
            assert {"index": "?", "worktree": "?", "path": OUTPUT_FILE} in status["entries"]
            # The agent edits a tracked file too: the diff against the base shows both commits'
            # worth of change (no upstream: the base is the first commit) plus the edit.
            (d.workdir / "README.md").write_text("hello\nedited by the agent\n")
            diff = await call("workspace/diff", {"session_id": sid})
            assert diff["base"] == first and not diff["truncated"]
            assert "+edited by the agent" in diff["diff"] and "+a" in diff["diff"]
            stat = await call("workspace/diff", {"session_id": sid, "stat": True})
            assert {f["path"] for f in stat["files"]} == {"README.md", "a.txt"}
            head_only = await call("workspace/diff", {"session_id": sid, "base": "HEAD"})
            assert "a.txt" not in head_only["diff"] and "+edited" in head_only["diff"]
            logged = await call("workspace/log", {"session_id": sid})
            assert [c["subject"] for c in logged["commits"]] == ["second", "first"]
            since = await call("workspace/log", {"session_id": sid, "base": first})
            assert [c["subject"] for c in since["commits"]] == ["second"]

            # An upload, as text and as bytes, then read back.
            await call(
                "workspace/write",
                {
                    "session_id": sid,
                    "path": "up/new.bin",
                    "content": "AAEC/w==",
                    "encoding": "base64",
                    "make_dirs": True,
                },
            )
            back = await call("workspace/read", {"session_id": sid, "path": "up/new.bin"})
            assert (
                back["encoding"] == "base64" and base64.b64decode(back["content"]) == b"\0\1\2\xff"
            )


async def test_bad_paths_bounds_and_bad_input_are_clear_refusals(tmp_path: Path) -> None:
    async with daemon(tmp_path, [fake("echo")], max_frame_bytes=4 * 1024 * 1024) as d:
        outside = tmp_path / "outside.txt"
        outside.write_text("secret\n")
        (d.workdir / "link").symlink_to(outside)
        (d.workdir / "dirlink").symlink_to(tmp_path)
        (d.workdir / "f.txt").write_text("x")
        async with d.viewer() as v:
            sid = (await d.start(v, "echo"))["session_id"]
            cases: list[tuple[str, dict[str, Any], str]] = [
                ("workspace/read", {"path": "link"}, "symbolic link"),
                ("workspace/read", {"path": "dirlink/outside.txt"}, "symbolic link"),
                ("workspace/list", {"path": "dirlink"}, "symbolic link"),
                ("workspace/read", {"path": "../outside.txt"}, "'..'"),
                ("workspace/read", {"path": str(outside)}, "relative"),
                ("workspace/read", {"path": "nope"}, "not found"),
                (
                    "workspace/read",
                    {"path": "f.txt", "length": 2 * 1024 * 1024},
                    "less than or equal",
                ),
                ("workspace/read", {"path": "f.txt", "offset": -1}, "greater than or equal"),
                ("workspace/read", {"path": "f.txt", "bogus": 1}, "bogus"),
                ("workspace/write", {"path": "link", "content": "x"}, "symbolic link"),
                ("workspace/write", {"path": "dirlink/new", "content": "x"}, "symbolic link"),
                ("workspace/write", {"path": "b", "content": "!!", "encoding": "base64"}, "base64"),
                ("workspace/write", {"path": "missing/dir/f", "content": "x"}, "not found"),
                ("workspace/diff", {"base": "--output=/tmp/x"}, "not a ref"),
                ("workspace/git_status", {}, "not a git repository"),
            ]
            for method, params, why in cases:
                err = await _err(v, method, {"session_id": sid, **params})
                assert err.code in (-32602, -32002), (method, params, err)
                assert why in err.message, (method, params, err.message)
            # The upload bound: one byte over is refused, nothing is written.
            big = "x" * (MAX_WRITE_BYTES + 1)
            err = await _err(
                v, "workspace/write", {"session_id": sid, "path": "big", "content": big}
            )
            assert "upload limit" in err.message
            assert not (d.workdir / "big").exists()
            assert outside.read_text() == "secret\n"
            assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("new")) == []


async def test_another_owner_and_a_read_token_are_refused(tmp_path: Path) -> None:
    async with daemon(tmp_path, [fake("echo")]) as d:
        (d.workdir / "f.txt").write_text("alice's\n")
        alice_token = d.token(subject="alice")
        async with d.viewer(alice_token) as alice:
            sid = (await d.start(alice, "echo"))["session_id"]
        async with d.viewer(d.token(subject="bob")) as bob:
            for method in (
                "workspace/list",
                "workspace/read",
                "workspace/diff",
                "workspace/write",
                "workspace/ports",
            ):
                params: dict[str, Any] = {"session_id": sid}
                if method == "workspace/read":
                    params["path"] = "f.txt"
                if method == "workspace/write":
                    params.update(path="f.txt", content="x")
                err = await _err(bob, method, params)
                assert err.code == -32003 and "another user" in err.message, (method, err)
        async with d.viewer(d.token("read", subject="alice")) as reader:
            # Agents running as the daemon's own user, without cgroups: nothing tells ports apart.
            ports = await reader.call("workspace/ports", {"session_id": sid})
            assert ports == {"ports": [], "by": None}
            got = await reader.call("workspace/read", {"session_id": sid, "path": "f.txt"})
            assert got["content"] == "alice's\n"
            err = await _err(
                reader, "workspace/write", {"session_id": sid, "path": "f.txt", "content": "x"}
            )
            assert err.code == -32003 and "write" in err.message
        assert (d.workdir / "f.txt").read_text() == "alice's\n"
