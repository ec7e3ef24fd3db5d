"""A session's usage bookkeeping: each prompt's tokens and cost (vm_agent.core.usage), with a
log line for whatever the agent reported that could not be kept."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from vm_agent.core import usage as u
from vm_agent.session.outcome import Outcome

log = logging.getLogger(__name__)


class UsageMeter:
    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._meter = u.PromptMeter()

    def restart(self) -> None:
        """A new agent process: its cumulative cost counts from zero."""
        self._meter.restart()

    def prompt_started(self) -> None:
        self._meter.prompt_started()

    def noted_update(self, update: Any) -> None:
        self._meter.noted_update(update)

    def answered(self, raw: Any) -> None:
        rejected: list[str] = []
        self._meter.answered(u.from_prompt_answer(raw, rejected))
        if rejected:
            log.warning(
                "session %s: the agent's usage had bad %s; ignored",
                self._session_id,
                ", ".join(rejected[:8]),
            )

    def prompt_ended(self) -> dict[str, Any] | None:
        """The prompt's usage as ``prompt.finished`` carries it (None: none reported)."""
        spent = self._meter.prompt_ended()
        return spent.to_json() if spent else None


def session_total(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """The session's usage: the sum over its prompts' (restored ones too)."""
    return u.total(u.parse(o.usage) for o in outcomes if o.usage).to_json()
