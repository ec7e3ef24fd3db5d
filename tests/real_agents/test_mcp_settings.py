"""agentSettings with the pinned real agents, through the real daemon: an MCP server of the
tests' own (``mcp_server.py``, stdio) given at session/start reaches the agent and its tool
is called; the model named is the one the model API is asked for; a mode takes effect; and
each agent's live ``mcpCapabilities`` are what the catalog says (``mcp_transports``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon.harness import Viewer
from tests.processes import with_variable
from tests.real_agents.agents import BIN, KITS, SYSTEM_PATH, Kit, _unshare, require_real_agents
from tests.real_agents.harness import WAIT_S, Rig, allow_once, daemon, rig, send_prompt
from tests.real_agents.model_api import Reply, ToolCall
from vm_agent.process.catalog import builtin_agents

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]

MCP_SERVER = Path(__file__).with_name("mcp_server.py")


@pytest.fixture(autouse=True)
def _real_agents() -> None:
    require_real_agents()


async def start_with(v: Viewer, r: Rig, settings: dict[str, Any]) -> dict[str, Any]:
    params = {"agent": r.kit.name, "cwd": str(r.work), "session_id": "s1"}
    with anyio.fail_after(WAIT_S):
        session = await v.call(
            "session/start", {**params, "agentSettings": settings}, timeout=WAIT_S
        )
        await v.call("session/subscribe", {"session_id": "s1"})
    assert session["state"] == "ready", session
    return dict(session)


async def run_prompt(v: Viewer, text: str) -> dict[str, Any]:
    """A prompt to its outcome, allowing once whatever the agent asks permission for."""
    asked = await send_prompt(v, text, "p1")
    answered = 0
    with anyio.fail_after(WAIT_S):
        while asked not in v.answers:
            requests = [e for e in v.events if e["type"] == "permission.requested"]
            for request in requests[answered:]:
                data = request["data"]
                option = allow_once(data)
                await v.call(
                    "permission/respond",
                    {"session_id": "s1", "request_id": data["request_id"], "option_id": option},
                )
            answered = len(requests)
            await v.receive_one()
    return dict(await v.answer(asked))


def mcp_stdio(record: Path) -> dict[str, Any]:
    return {
        "name": "rec",
        "command": sys.executable,
        "args": [str(MCP_SERVER), str(record)],
        "env": [],
    }


def recorded(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


# Per agent: how the model calls the server's tool, how the first request offers it (names
# of the tools offered at top level), and a model it offers that is not its default.
MCP_CASES = {
    # Claude Code names an MCP server's tools mcp__<server>__<tool>.
    "claude": ("mcp__rec__note", "mcp__rec__note", "haiku"),
    # Codex offers each server's tools in a namespace mcp__<server> (the stand-in's
    # "namespace/name" is a call with that namespace).
    "codex": ("mcp__rec/note", "mcp__rec", "gpt-5.4-mini"),
}


@pytest.mark.parametrize("name", list(MCP_CASES))
async def test_the_mcp_server_and_model_of_the_start_settings(tmp_path: Path, name: str) -> None:
    kit, record = KITS[name], tmp_path / "mcp-calls.jsonl"
    call, offered, model = MCP_CASES[name]
    async with rig(tmp_path, kit) as r:
        r.script.add(
            Reply(text="Noting it. ", tool=ToolCall(call, {"text": "hello-4711"})),
            Reply(text="Noted."),
        )
        settings = {"mcpServers": [mcp_stdio(record)], "model": model}
        async with daemon(r, r.agents_file()) as d, d.viewer() as v:
            await start_with(v, r, settings)
            outcome = await run_prompt(v, "note hello-4711 with your tool")
        assert outcome["outcome"] == "completed", outcome
        calls = [m for m in recorded(record) if m.get("method") == "tools/call"]
        assert [(c["params"]["name"], c["params"]["arguments"]) for c in calls] == [
            ("note", {"text": "hello-4711"})
        ], recorded(record)
        first, second = r.script.turns()[:2]
        assert offered in [t.get("name") for t in first.body["tools"]]
        assert "noted: hello-4711" in second.text  # the tool's answer went back to the model
        # The model named in agentSettings is the one asked for.
        for turn in (first, second):
            assert model.split("[")[0] in turn.body["model"], turn.body["model"]


async def test_claude_starts_in_the_mode_of_its_start_settings(tmp_path: Path) -> None:
    kit = KITS["claude"]
    async with rig(tmp_path, kit) as r:
        r.script.add(Reply(text="Here is a plan."))
        async with daemon(r, r.agents_file()) as d, d.viewer() as v:
            await start_with(v, r, {"mode": "plan"})
            settings = await v.call("session/settings", {"session_id": "s1"})
            assert settings["modes"]["currentModeId"] == "plan"
            outcome = await run_prompt(v, "make a plan")
            changes = [e["data"] for e in v.events if e["type"] == "agent.settings_changed"]
        assert outcome["outcome"] == "completed", outcome
        assert changes == [
            {"method": "session/set_mode", "params": {"modeId": "plan"}, "by": "start"}
        ]
        (turn,) = r.script.turns()[:1]
        assert "plan mode" in turn.text.lower()  # Claude Code tells the model it plans


async def test_gemini_gets_the_model_of_its_start_settings_in_its_environment(
    tmp_path: Path,
) -> None:
    """gemini-cli offers no model config option; its catalog entry's model_env
    (GEMINI_MODEL) carries the model, which is the one the model API is asked for."""
    kit = KITS["gemini"]
    async with rig(tmp_path, kit) as r:
        r.script.add(Reply(text="Hello."))
        async with daemon(r, r.agents_file()) as d, d.viewer() as v:
            await start_with(v, r, {"model": "gemini-2.5-flash-lite", "mode": "plan"})
            settings = await v.call("session/settings", {"session_id": "s1"})
            assert settings["modes"]["currentModeId"] == "plan"
            outcome = await run_prompt(v, "hello")
        assert outcome["outcome"] == "completed", outcome
        turns = [t for t in r.script.requests if "streamGenerateContent" in t.path]
        assert turns and all("/models/gemini-2.5-flash-lite:" in t.path for t in turns), [
            t.path for t in turns
        ]


async def live_initialize(kit: Kit, home: Path) -> dict[str, Any]:
    """The agent's own `initialize` answer (no credentials needed), in a namespace of its own."""
    env = kit.env(None, home)
    argv = [_unshare(), "--net", "--map-root-user", "--", str(BIN / kit.program[0])]
    argv += list(kit.program[1:])
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": 1, "clientCapabilities": {}},
    }
    env = {**env, "PATH": f"{BIN}:{SYSTEM_PATH}"}
    # a group of its own, killed whole: codex-acp's Node wrapper runs a native child that a
    # kill of the wrapper alone left running, orphaned
    async with await anyio.open_process(argv, env=env, start_new_session=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        await proc.stdin.send((json.dumps(request) + "\n").encode())
        buffer = b""
        try:
            with anyio.fail_after(WAIT_S):
                while True:
                    buffer += await proc.stdout.receive()
                    for line in buffer.split(b"\n")[:-1]:
                        message = json.loads(line) if line.strip().startswith(b"{") else {}
                        if message.get("id") == 1:
                            answer: dict[str, Any] = message["result"]
                            return answer
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("kit", list(KITS.values()), ids=list(KITS))
async def test_live_mcp_capabilities_are_the_catalogs(tmp_path: Path, kit: Kit) -> None:
    answer = await live_initialize(kit, tmp_path / "home")
    with anyio.fail_after(10):  # what was just killed may take a moment to be reaped
        while with_variable("HOME", str(tmp_path / "home")):
            await anyio.sleep(0.1)
    mcp = answer.get("agentCapabilities", {}).get("mcpCapabilities", {})
    live = ("stdio", *(t for t in ("http", "sse") if mcp.get(t) is True))
    assert builtin_agents()[kit.name].mcp_transports == live, mcp
