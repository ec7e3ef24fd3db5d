"""`vm-agent prompt` as a real command, against the real fake agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FAKE = f"{sys.executable} -m vm_agent fake-agent"


def vm_agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vm_agent", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_prompt_json_streams_chunks_then_the_outcome(tmp_path: Path) -> None:
    done = vm_agent("prompt", "--agent", "fake", "hello", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    *events, outcome = lines
    assert outcome["outcome"] == "completed" and outcome["stop_reason"] == "end_turn"
    chunks = [e["data"]["update"]["content"]["text"] for e in events if e["type"] == "acp.update"]
    assert "".join(chunks) == "hello"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all("outcome" not in e for e in events)


def test_prompt_human_output_and_exit_status_for_a_crash(tmp_path: Path) -> None:
    done = vm_agent(
        "prompt", "--agent-command", f"{FAKE} --scenario no-load", "hi there", cwd=tmp_path
    )
    assert done.returncode == 1
    assert "outcome: crashed" in done.stdout
    assert "crashing mid-prompt" in done.stderr  # the agent's stderr tail, for a person
    assert "Traceback" not in done.stderr


def test_prompt_with_an_agent_that_cannot_start(tmp_path: Path) -> None:
    done = vm_agent("prompt", "--agent-command", "/no/such/agent --acp", "hi", cwd=tmp_path)
    assert done.returncode == 1
    assert "could not be started" in done.stdout
    assert "No such file or directory" in done.stdout
    assert "Traceback" not in done.stderr


def test_prompt_with_permission_allow_runs_the_tools(tmp_path: Path) -> None:
    done = vm_agent(
        "prompt",
        "--agent-command",
        f"{FAKE} --scenario tools",
        "--permission",
        "allow",
        "--cwd",
        str(tmp_path),
        "go",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fake-agent-output.txt").exists()
    assert "hello-from-terminal" in done.stdout


def test_unknown_agent_is_a_usage_error(tmp_path: Path) -> None:
    done = vm_agent("prompt", "--agent", "nope", "hi", cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown agent 'nope'" in done.stderr
