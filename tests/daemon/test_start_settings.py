"""agentSettings through a real `vm-agent serve` to the fake agent (which records what it was
given, `--record`): MCP servers at session/new and again at the load after a crash and
after a daemon restart, mode and options set at start and again at each recovery, the
extra env in the agent's environment; settings the agent cannot take refuse the start with
a JSON-RPC error and leave no session (nor agent process) behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon.harness import (
    Viewer,
    control_plane,
    notify_socket,
    serving,
    stopped_at_exit,
)
from tests.token_files import write_token
from vm_agent.fake_agent.record import read_record
from vm_agent.process.catalog import fake_agent_command

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

STDIO = {"name": "tools", "command": "/usr/bin/true", "args": ["--serve"], "env": []}
HTTP = {"type": "http", "name": "web", "url": "http://127.0.0.1:9/mcp", "headers": []}
SETTINGS = {
    "mode": "code",
    "model": "smart",
    "effort": "high",
    "mcpServers": [STDIO],
    "env": {"TASK_MARK": "marked-4711"},
}


def write_agents(tmp: Path, record: Path) -> Path:
    def entry(name: str, *args: str, transports: str = '["stdio"]') -> str:
        command = fake_agent_command("--modes", "--record", str(record), *args)
        return f"[agents.{name}]\ncommand = {json.dumps(list(command))}\n" + (
            f"mcp_transports = {transports}\n"
        )

    crashes = ("--scenario", "crash-mid-prompt", "--once", "--state-dir", str(tmp / "agent"))
    path = tmp / "agents.toml"
    path.write_text(
        entry("fake", *crashes)
        # The catalog says http, the agent's initialize does not: the live answer decides.
        + entry("fake-http", "--scenario", "echo", transports='["stdio", "http"]')
    )
    return path


async def error_of(viewer: Viewer, method: str, params: dict[str, Any]) -> dict[str, Any]:
    msg_id = await viewer.send(method, params)
    with anyio.fail_after(60):
        while msg_id not in viewer.answers:
            await viewer.receive_one()
    answer = viewer.answers.pop(msg_id)
    assert "error" in answer, answer
    error: dict[str, Any] = answer["error"]
    return error


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def entries(record: Path, method: str) -> list[dict[str, Any]]:
    return [e for e in read_record(record) if e["method"] == method]


def settings_changes(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    return [
        (e["data"]["method"], e["data"]["params"], e["data"]["by"])
        for e in events
        if e["type"] == "agent.settings_changed"
    ]


async def test_settings_reach_the_agent_and_every_process_after_it(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    record = tmp_path / "record.jsonl"
    agents = write_agents(tmp_path, record)
    start = {"agent": "fake", "cwd": str(work), "session_id": "s1", "agentSettings": SETTINGS}
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            token = plane.viewer_token()
            process, url = await serving(tmp_path, plane, notify, agents)
            async with stopped_at_exit(process), Viewer.connect(url, token) as viewer:
                started = await viewer.call("session/start", start)
                assert started["state"] == "ready", started
                (init,) = entries(record, "initialize")
                assert init["env"]["TASK_MARK"] == "marked-4711"
                (new,) = entries(record, "session/new")
                assert new["params"]["mcpServers"] == [STDIO]
                assert [e["params"]["modeId"] for e in entries(record, "session/set_mode")] == [
                    "code"
                ]
                options = [
                    (e["params"]["configId"], e["params"]["value"])
                    for e in entries(record, "session/set_config_option")
                ]
                assert options == [("model", "smart"), ("effort", "high")]
                settings = await viewer.call("session/settings", {"session_id": "s1"})
                assert settings["modes"]["currentModeId"] == "code"
                current = {o["id"]: o["currentValue"] for o in settings["configOptions"]}
                assert current == {"model": "smart", "effort": "high"}

                # Viewers see the start's settings as changes made by "start".
                await viewer.call("session/subscribe", {"session_id": "s1", "after_seq": 0})
                await viewer.until(lambda e: e["type"] == "agent.settings_changed")
                await viewer.until(lambda e: e["data"].get("state") == "ready")
                assert settings_changes(viewer.events) == [
                    ("session/set_mode", {"modeId": "code"}, "start"),
                    ("session/set_config_option", {"configId": "model", "value": "smart"}, "start"),
                    ("session/set_config_option", {"configId": "effort", "value": "high"}, "start"),
                ]

                # The agent crashes mid-prompt; the daemon loads the session in a new process
                # with the same MCP servers and sets the mode and options again.
                first_pid = init["pid"]
                outcome = await viewer.call(
                    "session/prompt",
                    {
                        "session_id": "s1",
                        "prompt_id": "p1",
                        "prompt": [{"type": "text", "text": "x y z"}],
                    },
                )
                assert outcome["outcome"] == "recovered", outcome
                with anyio.fail_after(30):
                    while (await viewer.call("session/list", {}))["sessions"][0][
                        "state"
                    ] != "ready":
                        await anyio.sleep(0.05)
                (load,) = entries(record, "session/load")
                assert load["params"]["mcpServers"] == [STDIO]
                assert load["pid"] != first_pid
                again = [e for e in entries(record, "session/set_mode") if e["pid"] == load["pid"]]
                assert [e["params"]["modeId"] for e in again] == ["code"]
                options = [
                    (e["params"]["configId"], e["params"]["value"])
                    for e in entries(record, "session/set_config_option")
                    if e["pid"] == load["pid"]
                ]
                assert options == [("model", "smart"), ("effort", "high")]
                # Not recorded again: the settings did not change.
                assert len(settings_changes(viewer.events)) == 3
            assert process.returncode == 0

            # -- a new daemon on the same state: the kept settings go to the next process --
            loads = len(entries(record, "session/load"))
            process, url = await serving(tmp_path, plane, notify, agents)
            async with stopped_at_exit(process), Viewer.connect(url, token) as viewer:
                recovered = await viewer.call("session/recover", {"session_id": "s1"})
                assert recovered["state"] == "ready", recovered
                loaded = entries(record, "session/load")[loads:]
                assert [e["params"]["mcpServers"] for e in loaded] == [[STDIO]]
                pid = loaded[0]["pid"]
                modes = [e["params"]["modeId"] for e in entries(record, "session/set_mode")]
                assert modes[-1] == "code"
                assert entries(record, "session/set_mode")[-1]["pid"] == pid
                inits = entries(record, "initialize")
                assert inits[-1]["env"]["TASK_MARK"] == "marked-4711"
            assert process.returncode == 0


async def test_settings_the_agent_cannot_take_refuse_the_start(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    record = tmp_path / "record.jsonl"
    agents = write_agents(tmp_path, record)
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            token = plane.viewer_token()
            process, url = await serving(tmp_path, plane, notify, agents)
            async with stopped_at_exit(process), Viewer.connect(url, token) as viewer:

                async def refused(sid: str, agent: str, settings: dict[str, Any]) -> str:
                    params = {"agent": agent, "cwd": str(work), "session_id": sid}
                    error = await error_of(
                        viewer, "session/start", {**params, "agentSettings": settings}
                    )
                    assert error["code"] == -32602, error
                    listed = await viewer.call("session/list", {})
                    assert sid not in [s["session_id"] for s in listed["sessions"]]
                    message: str = error["message"]
                    return message

                # Found only once the agent answered: its process is stopped, no session.
                says = await refused("r1", "fake", {"mode": "plan"})
                assert "agentSettings.mode: no mode 'plan' (it offers: ask, code)" in says
                says = await refused("r2", "fake", {"model": "huge"})
                assert says.startswith("session/start: agentSettings.model: the agent refused")
                assert "no value 'huge'" in says and says.endswith("; it offers: fast, smart")
                says = await refused("r3", "fake-http", {"mcpServers": [HTTP]})
                assert "server 'web' uses http, which the agent does not take" in says
                assert entries(record, "session/new")  # r1, r2 got that far; r3 did not
                assert len(entries(record, "session/new")) == 2
                for init in entries(record, "initialize"):
                    with anyio.fail_after(10):
                        while alive(init["pid"]):
                            await anyio.sleep(0.05)
                # Refused before anything runs.
                spawned = len(entries(record, "initialize"))
                says = await refused("r4", "fake", {"mcpServers": [HTTP]})
                assert "server 'web' uses http, which agent fake does not take" in says
                says = await refused("r5", "fake", {"env": {"bad-name": "1"}})
                assert "'bad-name' is not a variable name" in says
                says = await refused("r6", "fake", {"env": {"HOME": "/"}})
                assert "HOME is set by the node" in says
                assert len(entries(record, "initialize")) == spawned

                # The same id, with settings the agent takes, starts.
                ok = {"agent": "fake", "cwd": str(work), "session_id": "r1"}
                started = await viewer.call(
                    "session/start", {**ok, "agentSettings": {"mode": "ask"}}
                )
                assert started["state"] == "ready"
            assert process.returncode == 0

            # A restart does not bring the refused ones back.
            process, url = await serving(tmp_path, plane, notify, agents)
            async with stopped_at_exit(process), Viewer.connect(url, token) as viewer:
                listed = await viewer.call("session/list", {})
                assert [s["session_id"] for s in listed["sessions"]] == ["r1"]
            assert process.returncode == 0
