"""A failure inside one session (here: its state cannot be recorded when its agent dies)
ends that session alone: it is in error, its waiting prompt is refused, and the supervisor
and every other session go on."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.session.harness import fake, running, text_prompt
from vm_agent.core.vocabulary import SessionState
from vm_agent.session.session import SessionRefused

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_session_that_fails_inside_is_in_error_and_the_rest_go_on(
    tmp_path: Path,
) -> None:
    agents = [fake("echo"), fake("slow", "--chunks", "200", "--delay-ms", "50")]
    async with running(tmp_path, agents) as h:
        doomed = await h.ready("slow")
        other = await h.ready("echo")
        real_emit = doomed._emit_state

        async def failing_emit(state: SessionState, note: str | None, **extra: Any) -> None:
            if state is not SessionState.PROMPTING:
                raise OSError(24, "Too many open files")  # what issue 15 saw
            await real_emit(state, note, **extra)

        doomed._emit_state = failing_emit  # type: ignore[method-assign]
        result: list[BaseException | str] = []

        async def prompt() -> None:
            try:
                result.append((await doomed.prompt("p1", text_prompt("go"))).outcome)
            except SessionRefused as exc:
                result.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(prompt)
            with anyio.fail_after(20):
                while doomed.state is not SessionState.PROMPTING or doomed.agent_pid is None:
                    await anyio.sleep(0.01)
            pid = doomed.agent_pid
            assert pid is not None
            os.killpg(pid, signal.SIGKILL)  # its disconnect must be recorded: that fails
            with anyio.fail_after(30):
                await doomed.stopped_for_good.wait()
        assert doomed.state is SessionState.ERROR
        assert (
            doomed.describe()["error"] == "internal error: OSError: [Errno 24] Too many open files"
        )
        [refused] = result
        assert isinstance(refused, SessionRefused)
        # The supervisor and the other session are untouched, and new sessions start.
        outcome = await other.prompt("o1", text_prompt("still here"))
        assert outcome.outcome == "completed"
        fresh = await h.ready("echo")
        assert (await fresh.prompt("f1", text_prompt("hello"))).outcome == "completed"
