"""Issue 25 through `vm-agent serve`: a viewer sees each retry of a prompt its agent failed
with a transient provider error (the fake agent answers as claude-agent-acp does on a 529),
one prompt.started and one prompt.finished; a prompt whose turn began a tool is not sent
again; the attempts are bounded; a cancel during the backoff cancels the prompt. The fake
agent loads sessions, as claude-agent-acp and codex-acp do: each retry is a new process."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon.harness import Viewer, control_plane, notify_socket, serving, stopped_at_exit
from tests.token_files import write_token
from vm_agent.process.catalog import fake_agent_command

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

AGENTS = {
    "once": ("provider-error", "--fail-times", "1"),
    "always": ("provider-error", "--fail-times", "100"),
    "tool": ("tool-then-provider-error", "--fail-times", "100"),
    "wait": (
        "provider-error",
        "--fail-times",
        "100",
        "--fail-status",
        "429",
        "--retry-after",
        "30",
    ),
}


def write_agents(tmp: Path) -> Path:
    path = tmp / "agents.toml"
    lines = []
    for name, args in AGENTS.items():
        # A state directory: the agent loads sessions, so a retry goes to a new process,
        # and the prompts it failed are counted over its processes.
        state = ("--state-dir", str(tmp / f"agent-{name}"), "--resume")
        command = fake_agent_command("--scenario", *args, *state)
        lines += [f"[agents.{name}]", f"command = {json.dumps(list(command))}", ""]
    path.write_text("\n".join(lines))
    return path


async def prompt(v: Viewer, work: Path, agent: str) -> tuple[int, list[dict[str, Any]]]:
    """Starts a session of ``agent`` and sends it a prompt: the request's id, its events."""
    await v.call("session/start", {"agent": agent, "cwd": str(work), "session_id": agent})
    await v.call("session/subscribe", {"session_id": agent, "after_seq": 0})
    text = [{"type": "text", "text": f"hello {agent}"}]
    msg_id = await v.send(
        "session/prompt", {"session_id": agent, "prompt_id": "p1", "prompt": text}
    )
    return msg_id, [e for e in v.events if e["session_id"] == agent]


def of(v: Viewer, session: str, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in v.events if e["session_id"] == session and e["type"] == kind]


async def test_retries_seen_by_a_viewer(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with tempfile.TemporaryDirectory(prefix="vmar-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            process, url = await serving(
                tmp_path,
                plane,
                notify,
                write_agents(tmp_path),
                VM_AGENT_PROMPT_RETRY_BASE_S="0.05",
                VM_AGENT_PROMPT_RETRY_MAX_S="40",
            )
            async with stopped_at_exit(process), Viewer.connect(url, plane.viewer_token()) as v:
                # a 529, then a success: one retry, one outcome, completed
                msg_id, _ = await prompt(v, work, "once")
                outcome = await v.answer(msg_id)
                assert (outcome["outcome"], outcome["stop_reason"]) == ("completed", "end_turn")
                await v.until(
                    lambda e: e["session_id"] == "once" and e["type"] == "prompt.finished"
                )
                (retry,) = of(v, "once", "prompt.retry")
                assert retry["prompt_id"] == "p1" and retry["attempt"] == 2
                assert retry["reason"] == "model provider overloaded (529)"
                assert 0.05 <= retry["delay_s"] <= 0.07
                assert len(of(v, "once", "prompt.started")) == 1
                assert len(of(v, "once", "prompt.finished")) == 1

                # 529 forever: failed after the attempts, with the reason
                msg_id, _ = await prompt(v, work, "always")
                outcome = await v.answer(msg_id)
                assert outcome["outcome"] == "failed"
                assert outcome["reason"].startswith(
                    "model provider overloaded (529) after 3 attempts: Internal error: API Error"
                )
                await v.until(
                    lambda e: e["session_id"] == "always" and e["type"] == "prompt.finished"
                )
                assert [r["attempt"] for r in of(v, "always", "prompt.retry")] == [2, 3]

                # a tool began before the error: never sent again
                msg_id, _ = await prompt(v, work, "tool")
                outcome = await v.answer(msg_id)
                assert outcome["outcome"] == "failed"
                assert "after the agent started a tool" in outcome["reason"]
                await v.until(
                    lambda e: e["session_id"] == "tool" and e["type"] == "prompt.finished"
                )
                assert of(v, "tool", "prompt.retry") == []

                # the provider asks for 30 s: a cancel during that wait ends the prompt now
                msg_id, _ = await prompt(v, work, "wait")
                retry = await v.until(
                    lambda e: e["session_id"] == "wait" and e["type"] == "prompt.retry"
                )
                assert retry["data"]["retry_after_s"] == 30
                assert retry["data"]["reason"] == "model provider rate limit (429)"
                with anyio.fail_after(10):
                    await v.call("session/cancel", {"session_id": "wait"})
                    outcome = await v.answer(msg_id)
                assert outcome["outcome"] == "cancelled"
