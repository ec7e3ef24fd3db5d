"""A prompt's outcome as the outside world sees it (DESIGN.md section 3)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from vm_agent.core.actions import RecordOutcome
from vm_agent.core.vocabulary import OutcomeKind


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    prompt_id: str
    outcome: OutcomeKind
    stop_reason: str | None = None
    reason: str | None = None
    error_code: int | None = None

    @classmethod
    def from_action(cls, session_id: str, act: RecordOutcome) -> Outcome:
        return cls(
            session_id=session_id,
            prompt_id=act.prompt_id,
            outcome=act.outcome,
            stop_reason=act.stop_reason,
            reason=act.reason,
            error_code=act.error_code,
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
