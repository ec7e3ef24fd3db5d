"""The `commit` scenario: work comes back the way a coding agent makes it, through ACP tools.

The prompt's text is a JSON object ``{"path", "content", "message"}`` (each optional); the
agent writes the file with ``fs/write_text_file`` and runs ``git add`` and ``git commit`` in
the session's cwd with ``terminal/create``, then says the commit's outcome (and, with
``"push": true``, what its own ``git push`` got: the work is meant to leave only through the
daemon's push).
"""

from __future__ import annotations

import json
import os
from typing import Any

from vm_agent.fake_agent.turn import END_TURN, Turn
from vm_agent.fake_agent.wire import ClientCallError

DEFAULT_PATH = "agent-work.txt"
DEFAULT_CONTENT = "work done by fake-agent\n"
DEFAULT_MESSAGE = "fake-agent: the work"


def _asked(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _run(turn: Turn, args: list[str]) -> tuple[int | None, str]:
    """``git args`` in a terminal of the session's; its exit code and output."""
    session_id = turn.session.session_id
    call = turn.peer.request
    created = await call(
        "terminal/create",
        {"sessionId": session_id, "command": "git", "args": args, "cwd": turn.session.cwd},
    )
    terminal_id = created.get("terminalId") if isinstance(created, dict) else None
    ids = {"sessionId": session_id, "terminalId": terminal_id}
    status = await call("terminal/wait_for_exit", ids)
    output = await call("terminal/output", ids)
    await call("terminal/release", ids)
    code = status.get("exitCode") if isinstance(status, dict) else None
    text = output.get("output") if isinstance(output, dict) else None
    return (code if isinstance(code, int) else None), str(text or "")


async def commit(turn: Turn, text: str) -> str:
    asked = _asked(text)
    rel = str(asked.get("path") or DEFAULT_PATH)
    path = os.path.join(turn.session.cwd, rel)
    try:
        await turn.peer.request(
            "fs/write_text_file",
            {
                "sessionId": turn.session.session_id,
                "path": path,
                "content": str(asked.get("content") or DEFAULT_CONTENT),
            },
        )
        steps = [
            ["add", "--", rel],
            ["commit", "-q", "-m", str(asked.get("message") or DEFAULT_MESSAGE)],
        ]
        if asked.get("push"):
            steps.append(["push", "origin", "HEAD"])
        said = []
        for args in steps:
            code, output = await _run(turn, args)
            said.append(f"git {args[0]}: exit {code}: {output.strip()}")
            if code != 0 and args[0] != "push":
                break
    except ClientCallError as exc:
        turn.chunk(f"client call {exc.method} failed: {exc.code} {exc.message}")
        return END_TURN
    turn.chunk("\n".join(said))
    return END_TURN
