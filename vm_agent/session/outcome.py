"""A prompt's outcome as the outside world sees it (docs/outcomes.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from vm_agent.core.actions import RecordOutcome
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import OutcomeKind


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    prompt_id: str
    outcome: OutcomeKind
    stop_reason: str | None = None
    reason: str | None = None
    error_code: int | None = None
    # auth_required only: the agent's advertised authMethods, so a person knows what to provide
    auth_methods: list[dict[str, Any]] | None = None
    # Tokens and cost the agent reported for this prompt (vm_agent.core.usage's form)
    usage: dict[str, Any] | None = None

    @classmethod
    def from_action(
        cls,
        session_id: str,
        act: RecordOutcome,
        auth_methods: Sequence[dict[str, Any]] = (),
        usage: dict[str, Any] | None = None,
    ) -> Outcome:
        return cls(
            session_id=session_id,
            prompt_id=act.prompt_id,
            outcome=act.outcome,
            stop_reason=act.stop_reason,
            reason=act.reason,
            error_code=act.error_code,
            auth_methods=list(auth_methods) if act.outcome is OutcomeKind.AUTH_REQUIRED else None,
            usage=usage,
        )

    @classmethod
    def for_failed_start(
        cls,
        session_id: str,
        prompt_id: str,
        machine: SessionMachine,
        auth_methods: Sequence[dict[str, Any]],
    ) -> Outcome:
        """``auth_required`` (with the agent's auth methods), ``timeout`` (the start
        deadline) or ``failed``: a start failure's meaning, as a prompt's outcome."""
        kind = machine.error_outcome or OutcomeKind.FAILED
        return cls(
            session_id=session_id,
            prompt_id=prompt_id,
            outcome=kind,
            reason=f"the agent could not be started: {machine.error}",
            error_code=machine.error_code,
            auth_methods=list(auth_methods) if kind is OutcomeKind.AUTH_REQUIRED else None,
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
