"""`vm-agent prompt` as a real command, against the real fake agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FAKE = f"{sys.executable} -m vm_agent fake-agent"


def vm_agent(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vm_agent", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def outcome_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    outcome: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return outcome


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


def test_an_agent_that_asks_for_authentication_is_auth_required(tmp_path: Path) -> None:
    # as codex-acp and gemini-cli without a key: session/new refused with -32000
    agent = f"{FAKE} --scenario echo --auth-on session/new"
    done = vm_agent("prompt", "--agent-command", agent, "--json", "hi", cwd=tmp_path)
    assert done.returncode == 1
    outcome = outcome_of(done)
    assert (outcome["outcome"], outcome["error_code"]) == ("auth_required", -32000)
    assert [m["id"] for m in outcome["auth_methods"]] == ["fake-key"]
    assert "refused session/new" in outcome["reason"]
    human = vm_agent("prompt", "--agent-command", agent, "hi", cwd=tmp_path)
    assert "outcome: auth_required" in human.stdout


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_a_start_that_hangs_ends_at_the_start_deadline(tmp_path: Path, how: str) -> None:
    agent = f"{FAKE} --scenario echo --hang-on session/new"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VM_AGENT_")}
    flags = ["--start-timeout", "1"] if how == "flag" else []
    if how == "variable":
        env["VM_AGENT_START_TIMEOUT_S"] = "1"
    done = vm_agent(
        "prompt", "--agent-command", agent, *flags, "--json", "hi", cwd=tmp_path, env=env
    )
    assert done.returncode == 1
    outcome = outcome_of(done)
    assert outcome["outcome"] == "timeout"
    assert "did not answer session/new within 1s" in outcome["reason"]


@pytest.mark.parametrize(
    ("flags", "env", "needle"),
    [
        (["--start-timeout", "0"], {}, "--start-timeout"),
        ([], {"VM_AGENT_START_TIMEOUT_S": "later"}, "VM_AGENT_START_TIMEOUT_S"),
    ],
)
def test_a_bad_start_timeout_is_a_usage_error(
    tmp_path: Path, flags: list[str], env: dict[str, str], needle: str
) -> None:
    done = vm_agent("prompt", *flags, "hi", cwd=tmp_path, env={**os.environ, **env})
    assert done.returncode == 2
    assert needle in done.stderr


def test_credentials_named_by_the_catalog_come_from_the_callers_environment(
    tmp_path: Path,
) -> None:
    agents = tmp_path / "agents.toml"
    command = json.dumps([sys.executable, "-m", "vm_agent", "fake-agent", "--scenario", "env"])
    agents.write_text(f'[agents.keyed]\ncommand = {command}\ncredentials = ["FAKE_PROVIDER_KEY"]\n')
    env = {**os.environ, "FAKE_PROVIDER_KEY": "k-123", "UNRELATED_TOKEN": "t-456"}
    done = vm_agent(
        "prompt", "--agent", "keyed", "--agents-file", str(agents), "--json", "env?",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (update,) = [
        json.loads(line) for line in done.stdout.splitlines()[:-1] if '"acp.update"' in line
    ]
    agent_env = json.loads(update["data"]["update"]["content"]["text"])
    assert agent_env["FAKE_PROVIDER_KEY"] == "k-123"  # named by the catalog: passed on
    assert "UNRELATED_TOKEN" not in agent_env  # anything else of the caller's: not
    without = vm_agent(
        "prompt", "--agent", "keyed", "--agents-file", str(agents), "--json", "env?",
        cwd=tmp_path, env={k: v for k, v in env.items() if k != "FAKE_PROVIDER_KEY"},
    )  # fmt: skip
    assert "FAKE_PROVIDER_KEY" not in without.stdout
