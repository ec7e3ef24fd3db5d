"""port/*: a server the session's own processes run (`python3 -m http.server` started in its
terminal) is reached by its viewer through the daemon's port; another owner, a read-only
token, another session's port and the daemon's own port are refused (real pool users and
cgroups, the real viewer server on loopback)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import httpx
import pytest

from tests.containment.harness import limit_defaults
from tests.containment.pool import TestPool, require_cgroup_v2, require_root
from tests.server.harness import Client, Daemon, RpcError, daemon
from vm_agent.containment.host import Containment, ContainmentConfig

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@asynccontextmanager
async def contained_daemon(pool: TestPool, tmp_path: Path) -> AsyncIterator[Daemon]:
    state = tmp_path / "cstate"
    state.mkdir(mode=0o700)
    containment = Containment.start(
        ContainmentConfig(
            state_dir=state,
            pool=pool.spec,
            workspace_roots=(PurePosixPath(pool.workspaces),),
            protected=(state,),
            defaults=limit_defaults(),
            cgroups=True,
        )
    )
    try:
        async with daemon(tmp_path, containment=containment) as d:
            yield d
    finally:
        containment.close()


async def _err(v: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as err:
        await v.call(method, params)
    return err.value


async def _serve_http(v: Client, sid: str) -> int:
    """Starts python's http.server in a terminal of the session; its port."""
    await v.call("session/subscribe", {"session_id": sid})
    tid = (await v.call("terminal/open", {"session_id": sid, "cols": 200}))["terminal_id"]
    await v.call(
        "terminal/input",
        {"session_id": sid, "terminal_id": tid, "data": "echo hello > page.txt; "
         "python3 -m http.server 0 --bind 127.0.0.1\n"},
    )  # fmt: skip
    with anyio.fail_after(30):
        while True:
            text = "".join(e["data"]["data"] for e in v.events if e["type"] == "terminal.output")
            if found := re.search(r"port (\d+)", text):
                return int(found[1])
            msg = await v.recv()
            if msg.get("method") == "session/event":
                v.events.append(msg["params"])


async def _get(v: Client, sid: str, port: int, path: str) -> bytes:
    opened = await v.call("port/open", {"session_id": sid, "port": port})
    stream = opened["stream_id"]
    request = f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
    await v.call("port/send", {"stream_id": stream, "data": base64.b64encode(request).decode()})
    body = b""
    with anyio.fail_after(20):
        while True:
            msg = await v.recv()
            params = msg.get("params") or {}
            if msg.get("method") == "port/data" and params["stream_id"] == stream:
                body += base64.b64decode(params["data"])
            elif msg.get("method") == "port/closed" and params["stream_id"] == stream:
                return body


async def _through_the_cli(d: Daemon, token: str, sid: str, port: int) -> str:
    argv = [sys.executable, "-m", "vm_agent", "attach", "--url", d.url, "--session", sid]
    env = {**os.environ, "VM_AGENT_TOKEN": token}
    async with await anyio.open_process(
        [*argv, "--forward", f"0:{port}"], env=env, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stderr is not None
        said = ""
        try:
            with anyio.fail_after(30):
                while not (found := re.search(r"forwarding 127\.0\.0\.1:(\d+)", said)):
                    said += (await proc.stderr.receive()).decode()
            local = int(found[1])
            async with httpx.AsyncClient(timeout=20) as http:
                answers = [await http.get(f"http://127.0.0.1:{local}/page.txt") for _ in range(3)]
            assert all(a.status_code == 200 for a in answers)
            return answers[0].text
        finally:
            proc.terminate()


async def test_a_sessions_server_through_the_daemons_port(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    async with contained_daemon(agent_pool, tmp_path) as d:
        alice_token = d.token(subject="alice")
        async with d.viewer(alice_token) as alice:
            cwd = agent_pool.workspaces / "fwd-a"
            sid = (await alice.call("session/start", {"agent": "echo", "cwd": str(cwd)}))[
                "session_id"
            ]
            port = await _serve_http(alice, sid)
            with anyio.fail_after(20):
                while not (await alice.call("workspace/ports", {"session_id": sid}))["ports"]:
                    await anyio.sleep(0.05)
            page = await _get(alice, sid, port, "/page.txt")
            assert page.startswith(b"HTTP/1.0 200") and page.endswith(b"hello\n"), page
            # The same from a plain HTTP client, through `vm-agent attach --forward`.
            assert await _through_the_cli(d, alice_token, sid, port) == "hello\n"

            # Alice's other session does not listen there; nor is the daemon's port hers.
            other = (
                await alice.call(
                    "session/start", {"agent": "echo", "cwd": str(agent_pool.workspaces / "fwd-b")}
                )
            )["session_id"]
            err = await _err(alice, "port/open", {"session_id": other, "port": port})
            assert err.code == -32001 and "not one" in err.message
            err = await _err(alice, "port/open", {"session_id": sid, "port": d.port})
            assert err.code == -32001 and "not one" in err.message
            err = await _err(alice, "port/send", {"stream_id": "fwd-nope", "data": ""})
            assert err.code == -32001

        async with d.viewer(d.token(subject="bob")) as bob:
            err = await _err(bob, "port/open", {"session_id": sid, "port": port})
            assert err.code == -32003 and "another user" in err.message
        async with d.viewer(d.token("read", subject="alice")) as reader:
            err = await _err(reader, "port/open", {"session_id": sid, "port": port})
            assert err.code == -32003 and "write" in err.message
