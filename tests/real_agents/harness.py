"""A real agent against a scripted model stand-in, through the real daemon or `vm-agent prompt`.

``rig`` serves the stand-in on a Unix socket (each agent reaches it through its own
namespace's loopback) and gives the agent a HOME of its own. ``Daemon`` is `vm-agent serve`
as a subprocess with a control plane for its tokens, and a raw websocket viewer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from tests.daemon.harness import (
    Plane,
    Viewer,
    base_env,
    children,
    control_plane,
    notify_socket,
    serving,
    sigterm_and_wait,
)
from tests.processes import command_line, descendants, survivors, with_variable
from tests.real_agents.agents import Kit, catalog_entry, write_agents_file
from tests.real_agents.model_api import Reply, Script, serve
from tests.token_files import write_token

# Generous: real agents on a shared two-core machine (Node start-up alone takes seconds).
START_TIMEOUT_S = "120"
CANCEL_GRACE_S = "30"
WAIT_S = 180


@dataclass
class Rig:
    kit: Kit
    script: Script
    socket: Path
    root: Path
    work: Path
    home: Path
    key: str = "sk-stand-in-0123456789"

    def entry(self, *, key: bool = True, credentials: bool = False, **kw: Any) -> dict[str, Any]:
        return catalog_entry(
            self.kit,
            model_socket=self.socket,
            home=self.home,
            key=self.key if key else None,
            credentials=credentials,
            **kw,
        )

    def agents_file(self, **kw: Any) -> Path:
        return write_agents_file(self.root / "agents.toml", {self.kit.name: self.entry(**kw)})


@asynccontextmanager
async def rig(tmp_path: Path, kit: Kit, replies: Iterable[Reply] = ()) -> AsyncIterator[Rig]:
    """The stand-in for ``kit``'s model API, serving ``replies``, and the agent's places."""
    work = tmp_path / "work"
    work.mkdir()
    script = Script(replies)
    # AF_UNIX paths are short (108 bytes): the socket lives in a short temp dir.
    with tempfile.TemporaryDirectory(prefix="ra-") as short:
        sock = Path(short) / "model.sock"
        async with serve(kit.app(script), script, uds=sock):
            yield Rig(kit, script, sock, tmp_path, work, tmp_path / "home")


# -- vm-agent prompt --------------------------------------------------------------------------


@dataclass
class PromptRun:
    code: int
    events: list[dict[str, Any]]
    outcome: dict[str, Any]
    stderr: str

    def texts(self) -> str:
        return agent_text(self.events)


async def vm_agent_prompt(
    r: Rig, text: str, *args: str, env: dict[str, str] | None = None
) -> PromptRun:
    argv = [sys.executable, "-m", "vm_agent", "prompt", "--agent", r.kit.name]
    argv += ["--agents-file", str(r.root / "agents.toml"), "--cwd", str(r.work), "--json"]
    argv += ["--start-timeout", START_TIMEOUT_S, *args, text]
    with anyio.fail_after(WAIT_S):
        done = await anyio.run_process(
            argv, env=env if env is not None else base_env(), cwd=r.work, check=False
        )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    assert lines, done.stderr.decode()
    await no_process_left(r)
    return PromptRun(done.returncode, lines[:-1], lines[-1], done.stderr.decode())


async def no_process_left(r: Rig) -> None:
    """Nothing with this agent's HOME lives on: not the agent, not what it started."""
    with anyio.move_on_after(10):  # what was just killed may take a moment to be reaped
        while with_variable("HOME", str(r.home)):
            await anyio.sleep(0.05)
    left = {pid: command_line(pid) for pid in with_variable("HOME", str(r.home))}
    assert left == {}, f"processes of the agent left: {left}"


# -- vm-agent serve ---------------------------------------------------------------------------


@dataclass
class Daemon:
    process: Process
    url: str
    plane: Plane
    work: Path
    seen: dict[int, int] = field(default_factory=dict)  # every descendant met, with its start

    def look(self) -> dict[int, int]:
        """Notes the daemon's descendants now (the agents and whatever they started)."""
        now = descendants(self.process.pid)
        self.seen.update(now)
        return now

    def agent_pid(self) -> int:
        """The agent process the daemon started (its one child)."""
        (pid,) = children(self.process.pid)
        return pid

    @asynccontextmanager
    async def viewer(self) -> AsyncIterator[Viewer]:
        async with Viewer.connect(self.url, self.plane.viewer_token()) as v:
            yield v


@asynccontextmanager
async def daemon(r: Rig, agents: Path) -> AsyncIterator[Daemon]:
    """`vm-agent serve` with ``agents``; on the way out, SIGTERM and no process left."""
    with tempfile.TemporaryDirectory(prefix="ra-n-") as short:
        async with (
            control_plane(r.root / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(r.root / "callback-token", plane.callback_token())
            process, url = await serving(
                r.root,
                plane,
                notify,
                agents,
                VM_AGENT_START_TIMEOUT_S=START_TIMEOUT_S,
                VM_AGENT_CANCEL_GRACE_S=CANCEL_GRACE_S,
                # Where sessions may run, once workspace roots are enforced.
                VM_AGENT_WORKSPACE_ROOTS=str(r.root),
            )
            d = Daemon(process, url, plane, r.work)
            try:
                yield d
                d.look()
                assert await sigterm_and_wait(process) == 0
            finally:
                if process.returncode is None:
                    process.kill()
                    with anyio.CancelScope(shield=True):
                        await process.wait()
                    for pid in survivors(d.seen):
                        os.kill(pid, signal.SIGKILL)
            left = {pid: command_line(pid) for pid in survivors(d.seen)}
            assert left == {}, f"processes left after the daemon stopped: {left}"
            await no_process_left(r)


async def start_session(v: Viewer, r: Rig, session_id: str = "s1") -> dict[str, Any]:
    with anyio.fail_after(WAIT_S):
        session = await v.call(
            "session/start",
            {"agent": r.kit.name, "cwd": str(r.work), "session_id": session_id},
            timeout=WAIT_S,
        )
        await v.call("session/subscribe", {"session_id": session_id})
    assert session["state"] == "ready", session
    return dict(session)


async def send_prompt(v: Viewer, text: str, prompt_id: str, session_id: str = "s1") -> int:
    return await v.send(
        "session/prompt",
        {
            "session_id": session_id,
            "prompt": [{"type": "text", "text": text}],
            "prompt_id": prompt_id,
        },
    )


async def event(v: Viewer, kind: str, **match: Any) -> dict[str, Any]:
    """The first event of ``kind`` whose data has the ``match`` items."""

    def wanted(e: dict[str, Any]) -> bool:
        return e["type"] == kind and all(e["data"].get(k) == x for k, x in match.items())

    found = await v.until(wanted, timeout=WAIT_S)
    return dict(found)


async def chunk_with(v: Viewer, text: str) -> None:
    """Waits until the agent's message chunks so far carry ``text`` (the stand-in's words
    relayed; agents split and merge the pieces they are streamed as they like)."""
    await v.until(lambda e: text in agent_text(v.events), timeout=WAIT_S)


def _chunk_text(data: dict[str, Any]) -> str:
    update = data.get("update", {})
    if update.get("sessionUpdate") != "agent_message_chunk":
        return ""
    content = update.get("content", {})
    return str(content.get("text", "")) if isinstance(content, dict) else ""


def agent_text(events: Iterable[dict[str, Any]]) -> str:
    return "".join(_chunk_text(e["data"]) for e in events if e["type"] == "acp.update")


def allow_once(request: dict[str, Any]) -> str:
    """The option id of a permission request's allow-once option."""
    options = request["request"]["options"]
    return str(next(o["optionId"] for o in options if o["kind"] == "allow_once"))
