"""`vm-agent task run`'s agent settings flags make the task's `agentSettings`; `task show`
says the resolved settings with where each came from (against a real control plane)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import running
from vm_agent.cli import task, task_settings

FS = {"name": "fs", "command": "mcp-fs", "args": ["/w"], "env": [{"name": "T", "value": "v"}]}


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    task.add_arguments(p)
    return p.parse_args(["run", "--agent", "fake", "hi", *argv])


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        ((), None),
        (("--model", "m", "--effort", "high"), {"model": "m", "effort": "high"}),
        (("--mode", "plan"), {"mode": "plan"}),
        (("--env", "A=1", "--env", "B=x=y", "--env", "C="),
         {"env": {"A": "1", "B": "x=y", "C": ""}}),
        (("--config-option", "thinking=on"), {"configOptions": {"thinking": "on"}}),
        (("--mcp-server", json.dumps(FS), "--mcp-server", '{"name":"b"}'),
         {"mcpServers": [FS, {"name": "b"}]}),
    ],
)  # fmt: skip
def test_flags_make_the_tasks_own_layer(argv: tuple[str, ...], body: dict[str, Any]) -> None:
    assert task_settings.body_of(parse(*argv)) == body


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("--env", "A"), "--env takes NAME=VALUE, not 'A'"),
        (("--env", "=1"), "--env takes NAME=VALUE"),
        (("--env", "A=1", "--env", "A=2"), "--env A given twice"),
        (("--mcp-server", "{nope"), "--mcp-server is not JSON"),
        (("--mcp-server", "[]"), "takes a JSON object"),
    ],
)
def test_malformed_flags_are_refused(argv: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        task_settings.body_of(parse(*argv))


def test_show_lines_say_where_each_came_from() -> None:
    view = {
        "agentSettings": {
            "model": {"value": "m", "layer": "task", "layerId": "t1", "version": None},
            "configOptions": {"x": {"value": "1", "layer": "user", "layerId": "a", "version": 2}},
            "mcpServers": [
                {"name": "fs", "command": "mcp-fs", "args": ["/w"], "envNames": ["T"],
                 "layer": "project", "layerId": "p", "version": 1},
                {"type": "http", "name": "s", "url": "https://x/", "headerNames": [],
                 "layer": "platform", "layerId": "platform", "version": 3},
            ],
            "env": {"A": {"value": "1", "layer": "task", "layerId": "t1", "version": None}},
        }
    }  # fmt: skip
    assert task_settings.lines(view) == [
        "agent settings:",
        "   model: m (from task t1)",
        "   config option x: 1 (from user a v2)",
        "   MCP server fs: stdio mcp-fs /w, env T (from project p v1)",
        "   MCP server s: http https://x/ (from platform platform v3)",
        "   env A=1 (from task t1)",
    ]
    assert task_settings.lines({"agentSettings": {}}) == task_settings.lines({}) == []
    changes = [
        {"field": "mode", "value": "code", "sentAt": "2026-…", "error": None},
        {"field": "model", "value": "x", "sentAt": None, "error": None},
        {"field": "mode", "value": "y", "sentAt": "2026-…", "error": "the node refused: no"},
    ]
    assert task_settings.lines({"agentSettings": {}, "settingChanges": changes}) == [
        "agent settings:",
        "   changed mode to code (relayed)",
        "   changed model to x (pending)",
        "   changed mode to y (refused: the node refused: no)",
    ]


@pytest.mark.anyio
async def test_run_and_show_against_a_control_plane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp", public_url="http://127.0.0.1:1", key_activation_delay_s=0
    )
    async with running(settings) as cp:
        await cp.ready("n1")
        token = cp.plane.tokens.mint_user_token("alice")
        common = ["--url", cp.url, "--token", token]
        argv = [*common, "run", "--agent", "fake", "--task-id", "t1", "--detach", "--model", "m"]
        argv += ["--mcp-server", json.dumps(FS), "--env", "RUST_LOG=debug", "hi"]
        p = argparse.ArgumentParser()
        task.add_arguments(p)
        assert await anyio.to_thread.run_sync(task.run, p.parse_args(argv)) == task.EXIT_OK
        assert await anyio.to_thread.run_sync(task.run, p.parse_args([*common, "show", "t1"])) == 0
        err = capsys.readouterr().err
        assert "   model: m (from task t1)" in err
        assert "   MCP server fs: stdio mcp-fs /w, env T (from task t1)" in err
        assert "   env RUST_LOG=debug (from task t1)" in err
        bad = p.parse_args([*common, "run", "--agent", "fake", "--env", "PATH=/x", "hi"])
        assert await anyio.to_thread.run_sync(task.run, bad) == task.EXIT_USAGE
        assert "task agentSettings: field 'env.PATH'" in capsys.readouterr().err
