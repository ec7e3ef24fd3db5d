"""The rest of the fake agent's scenarios through the real session path."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anyio
import pytest

from tests.session.harness import fake, held_at_its_permission, running, text_prompt
from vm_agent.acp.permissions import AllowPolicy, RejectPolicy
from vm_agent.process.procgroup import group_alive

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_tools_with_permission_allowed(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")], permissions=AllowPolicy) as h:
        s = await h.ready("tools")
        outcome = await s.prompt("p1", text_prompt("use your tools"))
        assert outcome.outcome == "completed"
        written = h.workdir / "fake-agent-output.txt"
        assert written.exists()
        (requested,) = await h.of_type(s, "permission.requested")
        (resolved,) = await h.of_type(s, "permission.resolved")
        assert requested["request_id"] == resolved["request_id"]
        assert resolved["outcome"] == {"outcome": "selected", "optionId": "allow"}
        texts = [
            u["update"]["content"]["text"]
            for u in await h.of_type(s, "acp.update")
            if u["update"]["sessionUpdate"] == "agent_message_chunk"
        ]
        summary = "".join(texts)
        assert "hello-from-terminal" in summary
        assert "failed" not in summary.lower()
        kinds = [u["update"]["sessionUpdate"] for u in await h.of_type(s, "acp.update")]
        assert "tool_call" in kinds and "tool_call_update" in kinds


async def test_tools_with_permission_rejected(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")], permissions=RejectPolicy) as h:
        s = await h.ready("tools")
        outcome = await s.prompt("p1", text_prompt("use your tools"))
        assert outcome.outcome == "completed"
        assert not (h.workdir / "fake-agent-output.txt").exists()
        (resolved,) = await h.of_type(s, "permission.resolved")
        assert resolved["outcome"] == {"outcome": "selected", "optionId": "reject"}


async def test_permission_asked_and_answered_by_a_person(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")]) as h:  # AskPolicy
        s = await h.ready("tools")
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("use your tools"))
            pending = await held_at_its_permission(s)
            s.permissions.respond(pending.request_id, "allow")  # type: ignore[attr-defined]
        assert s.outcomes["p1"].outcome == "completed"
        assert (h.workdir / "fake-agent-output.txt").exists()


async def test_cancel_answers_a_pending_permission_with_cancelled(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")]) as h:
        s = await h.ready("tools")
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("use your tools"))
            await held_at_its_permission(s)
            await s.cancel()
        assert s.outcomes["p1"].outcome == "cancelled"
        (resolved,) = await h.of_type(s, "permission.resolved")
        assert resolved["outcome"] == {"outcome": "cancelled"}


async def test_an_agent_dying_with_a_permission_pending_still_resolves_it(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")]) as h:  # AskPolicy: nobody answers
        s = await h.ready("tools")
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("use your tools"))
            await held_at_its_permission(s)
            assert s.agent_pid is not None
            os.kill(s.agent_pid, signal.SIGKILL)
        # the agent cannot load its session (no transcripts): the prompt crashed
        assert s.outcomes["p1"].outcome == "crashed"
        (requested,) = await h.of_type(s, "permission.requested")
        (resolved,) = await h.of_type(s, "permission.resolved")
        assert resolved["request_id"] == requested["request_id"]
        assert resolved["outcome"] == {"outcome": "cancelled"}
        assert "went away" in resolved["reason"]
        assert s.permissions.pending() == []  # type: ignore[attr-defined]
        kinds = [e.type for e in await h.events(s)]
        assert kinds.index("permission.resolved") < kinds.index("prompt.finished")


async def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("garbage-lines", "--chunks", "3")]) as h:
        s = await h.ready("garbage-lines")
        outcome = await s.prompt("p1", text_prompt("abcdef"))
        assert outcome.outcome == "completed"
        texts = [u["update"]["content"]["text"] for u in await h.of_type(s, "acp.update")]
        assert "".join(texts) == "abcdef"


@pytest.mark.slow
async def test_huge_line_is_relayed_whole(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("huge-line", "--line-mb", "5")]) as h:
        s = await h.ready("huge-line")
        assert (await s.prompt("p1", text_prompt("big"))).outcome == "completed"
        (update,) = await h.of_type(s, "acp.update")
        assert len(update["update"]["content"]["text"]) == 5 * 1024 * 1024


async def test_stderr_flood_is_drained(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("stderr-flood", "--stderr-bytes", str(4 << 20))]) as h:
        s = await h.ready("stderr-flood")
        with anyio.fail_after(30):
            assert (await s.prompt("p1", text_prompt("noisy"))).outcome == "completed"


@pytest.mark.slow
async def test_closed_stdout_is_a_disconnect_and_recovers(tmp_path: Path) -> None:
    agent = fake("close-stdout", "--state-dir", str(tmp_path / "agent"))
    async with running(tmp_path, [agent]) as h:
        s = await h.ready("close-stdout")
        outcome = await s.prompt("p1", text_prompt("bye"))
        assert outcome.outcome == "recovered"
        (report,) = await h.of_type(s, "agent.crash_report")
        assert report["recovered"] is True


@pytest.mark.slow
async def test_stopping_kills_grandchildren_that_ignore_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "children.pids"
    agent = fake("spawns-children", "--children", "3", "--pid-file", str(pid_file))
    async with running(tmp_path, [agent]) as h:
        s = await h.ready("spawns-children")
        assert (await s.prompt("p1", text_prompt("hi"))).outcome == "completed"
        children = [int(x) for x in pid_file.read_text().split()]
        assert len(children) == 3
        pgid = s.agent_pid
        assert pgid is not None and group_alive(pgid)
        await s.stop()
        with anyio.fail_after(15):
            while group_alive(pgid):
                await anyio.sleep(0.05)
    for child in children:
        stat = Path(f"/proc/{child}/stat")
        assert not stat.exists() or stat.read_text().split(") ")[1].startswith(("Z", "X"))


async def test_agent_environment_is_the_allow_list_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VM_AGENT_CALLBACK_TOKEN_LEAK", "do-not-pass-me")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "provider-credential")
    async with running(tmp_path, [fake("env")]) as h:
        s = await h.ready("env")
        assert (await s.prompt("p1", text_prompt("env"))).outcome == "completed"
        (update,) = await h.of_type(s, "acp.update")
        env = json.loads(update["update"]["content"]["text"])
        assert "VM_AGENT_CALLBACK_TOKEN_LEAK" not in env
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert set(env) <= set(h.supervisor.config.env_allow) | {"PWD", "_"}
        assert "PATH" in env
