"""The `tools` scenario: a tool call behind a permission, file and terminal calls."""

from __future__ import annotations

import json
import os
from typing import Any

from vm_agent.fake_agent.turn import CANCELLED, END_TURN, Turn
from vm_agent.fake_agent.wire import ClientCallError

TOOL_CALL_ID = "fake-tool-1"
OUTPUT_FILE = "fake-agent-output.txt"
# Non-ASCII on purpose: the client's file calls must keep UTF-8 intact.
FILE_CONTENT = "written by fake-agent: héllo ✓\nsecond line\n"
TERMINAL_COMMAND = "sh"
TERMINAL_ARGS = ("-c", "echo hello-from-terminal")
PERMISSION_OPTIONS = (
    {"optionId": "allow", "name": "Allow once", "kind": "allow_once"},
    {"optionId": "reject", "name": "Reject once", "kind": "reject_once"},
)


def _status(status: str) -> dict[str, Any]:
    return {"sessionUpdate": "tool_call_update", "toolCallId": TOOL_CALL_ID, "status": status}


def _permission_choice(result: Any) -> str | None:
    """The selected optionId, or None when the outcome is `cancelled` (or unreadable)."""
    outcome = result.get("outcome") if isinstance(result, dict) else None
    if isinstance(outcome, dict) and outcome.get("outcome") == "selected":
        option = outcome.get("optionId")
        return option if isinstance(option, str) else None
    return None


async def tools(turn: Turn, text: str) -> str:
    session_id = turn.session.session_id
    path = os.path.join(turn.session.cwd, OUTPUT_FILE)
    tool_call = {
        "toolCallId": TOOL_CALL_ID,
        "title": f"Write, read back and run a command in {turn.session.cwd}",
        "kind": "edit",
        "status": "pending",
        "locations": [{"path": path}],
        "rawInput": {"path": path, "command": [TERMINAL_COMMAND, *TERMINAL_ARGS]},
    }
    turn.update({"sessionUpdate": "tool_call", **tool_call})
    try:
        result = await turn.peer.request(
            "session/request_permission",
            {"sessionId": session_id, "toolCall": tool_call, "options": list(PERMISSION_OPTIONS)},
        )
    except ClientCallError as exc:
        return _report_error(turn, exc)
    choice = _permission_choice(result)
    if choice is None or turn.cancelled:
        turn.update(_status("failed"))
        return CANCELLED
    if choice != "allow":
        turn.update(_status("failed"))
        turn.chunk("permission rejected")
        return END_TURN
    turn.update(_status("in_progress"))
    try:
        summary = await _run_tools(turn, path)
    except ClientCallError as exc:
        return _report_error(turn, exc)
    if turn.cancelled:
        turn.update(_status("failed"))
        return CANCELLED
    turn.update(_status("completed"))
    turn.chunk(summary)
    return END_TURN


async def _run_tools(turn: Turn, path: str) -> str:
    session_id = turn.session.session_id
    call = turn.peer.request
    await call(
        "fs/write_text_file", {"sessionId": session_id, "path": path, "content": FILE_CONTENT}
    )
    read = await call("fs/read_text_file", {"sessionId": session_id, "path": path})
    content = read.get("content") if isinstance(read, dict) else None
    matches = "matches" if content == FILE_CONTENT else "DOES NOT match"
    created = await call(
        "terminal/create",
        {
            "sessionId": session_id,
            "command": TERMINAL_COMMAND,
            "args": list(TERMINAL_ARGS),
            "cwd": turn.session.cwd,
        },
    )
    terminal_id = created.get("terminalId") if isinstance(created, dict) else None
    ids = {"sessionId": session_id, "terminalId": terminal_id}
    exit_status = await call("terminal/wait_for_exit", ids)
    output = await call("terminal/output", ids)
    await call("terminal/release", ids)
    terminal_output = output.get("output") if isinstance(output, dict) else None
    return (
        f"wrote {path}; read back {content!r} ({matches} what was written); "
        f"terminal exit {json_compact(exit_status)}, output {terminal_output!r}"
    )


def json_compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _report_error(turn: Turn, exc: ClientCallError) -> str:
    turn.update(_status("failed"))
    turn.chunk(f"client call {exc.method} failed: {exc.code} {exc.message}")
    return END_TURN
