"""Prompts run in the server's task group, not in the viewer's request task.

So a viewer that disconnects mid-prompt never cancels the session's work halfway (a
cancellation inside ``AgentSession.prompt`` could leave the session's machine between two
actions); the prompt runs once, and whoever asks again with the same ``prompt_id`` (the
same viewer reconnected, or another one) waits for the same outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from vm_agent.session.outcome import Outcome
from vm_agent.session.session import AgentSession

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Run:
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: Outcome | None = None
    error: Exception | None = None


class PromptRuns:
    def __init__(self) -> None:
        self._running: dict[tuple[str, str], _Run] = {}

    def running(self) -> int:
        return len(self._running)

    async def run(
        self, tg: TaskGroup, session: AgentSession, prompt_id: str, prompt: list[dict[str, object]]
    ) -> Outcome:
        """The prompt's outcome; raises what ``AgentSession.prompt`` raised (SessionRefused)."""
        done = session.outcomes.get(prompt_id)
        if done is not None:
            return done
        key = (session.id, prompt_id)
        run = self._running.get(key)
        if run is None:
            run = self._running[key] = _Run()
            tg.start_soon(self._drive, key, run, session, prompt_id, prompt)
        await run.done.wait()
        if run.error is not None:
            raise run.error
        assert run.outcome is not None
        return run.outcome

    async def _drive(
        self,
        key: tuple[str, str],
        run: _Run,
        session: AgentSession,
        prompt_id: str,
        prompt: list[dict[str, object]],
    ) -> None:
        try:
            run.outcome = await session.prompt(prompt_id, [dict(b) for b in prompt])
        except Exception as exc:
            run.error = exc
        finally:
            # Finished prompts are answered from session.outcomes; refused ones may retry.
            self._running.pop(key, None)
            run.done.set()
