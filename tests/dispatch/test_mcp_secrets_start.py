"""A secret an MCP server needs (issue 25), end to end with the real daemon: the task
names the owner's secret, the start carries the reference, the daemon fetches the value
from the control plane at spawn (and again when it recovers the session after a crash)
and gives it to the agent's `session/new` and `session/load` only; no file of the node's
(state dir, event log, its log) nor any answer about the task holds it."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.dispatch.harness import WAIT_S, stack
from vm_agent.fake_agent.record import read_record
from vm_agent.process.catalog import fake_agent_command

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

VALUE = "mcp-secret-value-never-on-disk-7d1c"
FILES = {
    "name": "files",
    "command": "mcp-files",
    "env": [{"name": "MCP_FILES_TOKEN", "secret": "files-token"}],
}


async def test_a_secret_reaches_the_agent_and_nowhere_else(tmp_path: Path) -> None:
    log = tmp_path / "agent-record.jsonl"
    state = tmp_path / "agent-state"
    command = fake_agent_command(
        "--scenario", "crash-mid-prompt", "--once", "--after-chunks", "1",
        "--record", str(log), "--state-dir", str(state),
    )  # fmt: skip
    entry = f"[agents.fake-rec]\ncommand = {json.dumps(list(command))}\n"
    async with stack(tmp_path, extra_agents=entry) as s:
        r = await s.client.put(
            "/api/secrets/files-token", json={"value": VALUE}, headers=s.user("alice")
        )
        assert r.status_code == 201, r.text
        made = await s.submit(
            taskId="sec", agent="fake-rec", prompt="hi", agentSettings={"mcpServers": [FILES]}
        )
        # The prompt the crash cut short fails the task; the daemon opens the session again.
        done = await s.until("sec", "completed", "failed", "crashed", "cancelled")
        assert done["outcome"]["kind"] == "recovered", done
        with anyio.fail_after(WAIT_S):
            while not any(e["method"] == "session/load" for e in read_record(log)):
                await anyio.sleep(0.05)
        answers = json.dumps([made, done, await s.events("sec"), await s.task("sec")])
    seen = read_record(log)
    given = [
        (e["method"], e["params"]["mcpServers"])
        for e in seen
        if e["method"] in {"session/new", "session/load", "session/resume"}
    ]
    wanted = [{"name": "files", "command": "mcp-files", "args": [],
               "env": [{"name": "MCP_FILES_TOKEN", "value": VALUE}]}]  # fmt: skip
    assert given[0] == ("session/new", wanted)
    assert len(given) >= 2 and all(servers == wanted for _, servers in given)  # recovered
    assert VALUE not in answers
    # Every file the node and the control plane wrote: the daemon's state dir (registry,
    # event log), its log, the control plane's database (sealed there). The agent's own
    # record and state are the agent's.
    assert (tmp_path / "state").is_dir() and (tmp_path / "daemon.log").stat().st_size > 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != log and state not in path.parents:
            assert VALUE.encode() not in path.read_bytes(), path
