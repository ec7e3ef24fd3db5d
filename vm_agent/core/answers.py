"""What the agent's answer to ``session/prompt`` means (docs/outcomes.md): the prompt's
outcome, or (issue 25) a retry after a transient model-provider error."""

from __future__ import annotations

from typing import Any

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.provider_errors import (
    AUTH_REQUIRED_CODE,
    REQUEST_CANCELLED_CODE,
    RetryPolicy,
    classify_prompt_error,
)
from vm_agent.core.vocabulary import OutcomeKind, SessionState


def prompt_answer(
    prompt_id: str,
    answer: e.PromptAnswered | e.PromptErrored,
    *,
    cancelling: bool,
    attempt: int,
    retry: RetryPolicy,
) -> a.RecordOutcome | a.RetryPrompt:
    """The answer to attempt number ``attempt`` of the prompt, while ``cancelling`` or not."""
    if isinstance(answer, e.PromptAnswered):
        stop = answer.stop_reason
        kind = OutcomeKind.CANCELLED if stop == "cancelled" else OutcomeKind.COMPLETED
        return a.RecordOutcome(prompt_id, kind, stop_reason=stop)
    code, message = answer.code, error_detail(answer.message, answer.data)
    if code == AUTH_REQUIRED_CODE:
        return a.RecordOutcome(
            prompt_id, OutcomeKind.AUTH_REQUIRED, reason=message, error_code=code
        )
    if cancelling and code == REQUEST_CANCELLED_CODE:
        return a.RecordOutcome(prompt_id, OutcomeKind.CANCELLED, reason=message, error_code=code)
    provider = None if cancelling else classify_prompt_error(code, answer.message, answer.data)
    if provider is None:
        return a.RecordOutcome(prompt_id, OutcomeKind.FAILED, reason=message, error_code=code)
    decision = retry.decide(
        provider,
        attempt,
        tool_started=answer.tool_started,
        random=answer.random,
        detail=message,
    )
    if not decision.retry:
        return a.RecordOutcome(
            prompt_id, OutcomeKind.FAILED, reason=decision.reason, error_code=code
        )
    return a.RetryPrompt(
        prompt_id,
        attempt=attempt + 1,
        delay_s=decision.delay_s,
        reason=decision.reason,
        error_code=code,
        message=message,
        retry_after_s=provider.retry_after_s,
    )


def error_detail(message: str, data: Any) -> str:
    """The error's message, with its ``data``'s own message when that says more (codex-acp
    answers ``Internal error`` and puts what happened in ``data.message``)."""
    detail = data.get("message") if isinstance(data, dict) else None
    if isinstance(detail, str) and detail and detail not in message:
        return f"{message}: {detail}"
    return message


def failure_outcome(error_code: int | None, timed_out: bool) -> OutcomeKind:
    """What a start or recovery failure means to someone who wanted a prompt."""
    if error_code == AUTH_REQUIRED_CODE:
        return OutcomeKind.AUTH_REQUIRED
    if timed_out:
        return OutcomeKind.TIMEOUT
    return OutcomeKind.FAILED


def failure_note(outcome: OutcomeKind, message: str) -> str:
    if outcome is OutcomeKind.AUTH_REQUIRED:
        return f"the agent needs authentication: {message}"
    return message


def refusal(state: SessionState, error: str | None) -> str:
    """Why a prompt is refused in ``state`` (only ``ready`` takes one)."""
    return {
        SessionState.PROMPTING: "a prompt is already running in this session",
        SessionState.CANCELLING: "a prompt is being cancelled in this session",
        SessionState.STARTING: "the session is still starting",
        SessionState.RECOVERING: "the session is recovering its agent",
        SessionState.ERROR: f"the session is in error: {error}",
        SessionState.STOPPED: "the session is stopped",
    }.get(state, f"the session is {state.value}")
