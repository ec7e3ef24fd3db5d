"""The tools scenario against a small real client: files on disk, a real terminal."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fake_agent.harness import Agent, Message, chunk_texts, updates
from vm_agent.fake_agent.tools import FILE_CONTENT, OUTPUT_FILE

pytestmark = pytest.mark.integration


class Client:
    """Answers the agent's requests; `permission` is the outcome to give."""

    def __init__(self, permission: dict[str, Any], fail: str | None = None) -> None:
        self.permission = permission
        self.fail = fail
        self.methods: list[str] = []
        self.terminals: dict[str, subprocess.CompletedProcess[str]] = {}

    def __call__(self, request: Message) -> Message:
        method, params = request["method"], request["params"]
        self.methods.append(method)
        if method == self.fail:
            return {"error": {"code": -32603, "message": "disk on fire"}}
        if method == "session/request_permission":
            return {"result": {"outcome": self.permission}}
        if method == "fs/write_text_file":
            Path(params["path"]).write_text(params["content"], encoding="utf-8")
            return {"result": {}}
        if method == "fs/read_text_file":
            return {"result": {"content": Path(params["path"]).read_text(encoding="utf-8")}}
        if method == "terminal/create":
            done = subprocess.run(
                [params["command"], *params["args"]],
                cwd=params["cwd"],
                capture_output=True,
                text=True,
                check=False,
            )
            terminal_id = f"term-{len(self.terminals)}"
            self.terminals[terminal_id] = done
            return {"result": {"terminalId": terminal_id}}
        done = self.terminals[params["terminalId"]]
        if method == "terminal/wait_for_exit":
            return {"result": {"exitCode": done.returncode, "signal": None}}
        if method == "terminal/output":
            return {"result": {"output": done.stdout, "truncated": False}}
        if method == "terminal/release":
            return {"result": {}}
        return {"error": {"code": -32601, "message": f"Method not found: {method}"}}


def run_tools(tmp_path: Path, client: Client) -> tuple[list[Message], Message]:
    with Agent("--scenario", "tools") as agent:
        session_id = agent.start(str(tmp_path))
        return agent.collect(agent.prompt(session_id, "use your tools"), client)


def tool_statuses(seen: list[Message]) -> list[str]:
    return [
        m["params"]["update"]["status"]
        for m in seen
        if m.get("method") == "session/update"
        and m["params"]["update"]["sessionUpdate"] in ("tool_call", "tool_call_update")
    ]


def test_allowed_writes_reads_and_runs(tmp_path: Path) -> None:
    client = Client({"outcome": "selected", "optionId": "allow"})
    seen, answer = run_tools(tmp_path, client)
    assert client.methods == [
        "session/request_permission",
        "fs/write_text_file",
        "fs/read_text_file",
        "terminal/create",
        "terminal/wait_for_exit",
        "terminal/output",
        "terminal/release",
    ]
    permission = next(m for m in seen if m.get("method") == "session/request_permission")
    options = permission["params"]["options"]
    assert [(o["optionId"], o["kind"]) for o in options] == [
        ("allow", "allow_once"),
        ("reject", "reject_once"),
    ]
    assert updates(seen)[0] == "tool_call"
    assert tool_statuses(seen) == ["pending", "in_progress", "completed"]
    assert (tmp_path / OUTPUT_FILE).read_text(encoding="utf-8") == FILE_CONTENT
    (summary,) = chunk_texts(seen)
    assert "hello-from-terminal" in summary
    assert repr(FILE_CONTENT) in summary
    assert "(matches" in summary
    assert answer["result"] == {"stopReason": "end_turn"}


def test_rejected(tmp_path: Path) -> None:
    client = Client({"outcome": "selected", "optionId": "reject"})
    seen, answer = run_tools(tmp_path, client)
    assert client.methods == ["session/request_permission"]
    assert tool_statuses(seen) == ["pending", "failed"]
    assert chunk_texts(seen) == ["permission rejected"]
    assert answer["result"] == {"stopReason": "end_turn"}
    assert not (tmp_path / OUTPUT_FILE).exists()


def test_permission_cancelled(tmp_path: Path) -> None:
    seen, answer = run_tools(tmp_path, Client({"outcome": "cancelled"}))
    assert tool_statuses(seen) == ["pending", "failed"]
    assert answer["result"] == {"stopReason": "cancelled"}


def test_client_error_is_reported(tmp_path: Path) -> None:
    client = Client({"outcome": "selected", "optionId": "allow"}, fail="terminal/create")
    seen, answer = run_tools(tmp_path, client)
    (text,) = chunk_texts(seen)
    assert "terminal/create" in text
    assert "disk on fire" in text
    assert tool_statuses(seen)[-1] == "failed"
    assert answer["result"] == {"stopReason": "end_turn"}
