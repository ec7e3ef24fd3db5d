"""Prompts by id: each runs at most once, and every caller of an id shares its one ending."""

from __future__ import annotations

from typing import Any

import anyio

from vm_agent.session.outcome import Outcome


class SessionRefused(Exception):
    """A request the session cannot take in its present state (e.g. a second prompt)."""


class PromptWait:
    """What the callers of one prompt id wait for: its outcome, or a refusal."""

    __slots__ = ("done", "refused")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.refused: str | None = None


class PromptBook:
    """The prompts asked of a session, waiting to be sent, running, and ended."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}  # restored ones too, after a daemon restart
        self._unsent: dict[str, list[dict[str, Any]]] = {}
        # Sent and not ended: kept, as a transient provider error sends it again (issue 25).
        self._running: dict[str, list[dict[str, Any]]] = {}
        self._waits: dict[str, PromptWait] = {}

    def waiting(self, prompt_id: str) -> PromptWait | None:
        return self._waits.get(prompt_id)

    def ask(self, prompt_id: str, prompt: list[dict[str, Any]]) -> PromptWait:
        """A new prompt id: kept until the machine says to send it or refuses it."""
        wait = self._waits[prompt_id] = PromptWait()
        self._unsent[prompt_id] = prompt
        return wait

    def refuse(self, prompt_id: str, reason: str) -> None:
        wait = self._waits.pop(prompt_id)
        self._unsent.pop(prompt_id, None)
        wait.refused = reason
        wait.done.set()

    def refuse_all(self, reason: str) -> None:
        """Every prompt still waiting is refused (the session cannot run them any more)."""
        for prompt_id in list(self._waits):
            self.refuse(prompt_id, reason)

    def take(self, prompt_id: str) -> list[dict[str, Any]]:
        """The prompt's content, once, as it is first sent."""
        prompt = self._running[prompt_id] = self._unsent.pop(prompt_id)
        return prompt

    def again(self, prompt_id: str) -> list[dict[str, Any]]:
        """The running prompt's content, to send it again."""
        return self._running[prompt_id]

    def finish(self, outcome: Outcome) -> None:
        self.outcomes[outcome.prompt_id] = outcome
        self._unsent.pop(outcome.prompt_id, None)
        self._running.pop(outcome.prompt_id, None)
        wait = self._waits.pop(outcome.prompt_id, None)
        if wait is not None:
            wait.done.set()

    async def ending(self, prompt_id: str, wait: PromptWait) -> Outcome:
        """The outcome once there is one; raises ``SessionRefused`` for a refusal."""
        await wait.done.wait()
        if wait.refused is not None:
            raise SessionRefused(wait.refused)
        return self.outcomes[prompt_id]
