"""What the agent's answer to ``session/prompt`` means (docs/outcomes.md): the prompt's
outcome, or (issue 25) a retry after a transient model-provider error or a cut answer."""

from __future__ import annotations

from typing import Any

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.policy import SessionPolicy
from vm_agent.core.provider_errors import (
    AUTH_REQUIRED_CODE,
    REQUEST_CANCELLED_CODE,
    ProviderError,
    Transience,
    classify_prompt_error,
)
from vm_agent.core.vocabulary import OutcomeKind, SessionState

CUT = ProviderError(Transience.CUT)


def cut_answer(answer: e.PromptAnswered, *, empty_usage_means_cut: bool) -> ProviderError | None:
    """A turn the agent ended as a whole one though the provider cut its answer mid-stream.

    Only for an agent whose catalog entry declares the signal (claude-agent-acp 0.23.1:
    ``end_turn``, the cut piece of text shown, a request billed, no token counted; docs/
    agents.md, *Provider errors*). Text with no request billed is no cut (claude's local
    ``/context``); usage reported with tokens, or none at all, says nothing.
    """
    cut = (
        empty_usage_means_cut
        and answer.stop_reason == "end_turn"
        and answer.input_tokens == 0
        and answer.output_tokens == 0
        and answer.streamed_text
        and answer.cost_rose
    )
    return CUT if cut else None


def prompt_answer(
    prompt_id: str,
    answer: e.PromptAnswered | e.PromptErrored,
    *,
    cancelling: bool,
    attempt: int,
    policy: SessionPolicy,
) -> a.RecordOutcome | a.RetryPrompt:
    """The answer to attempt number ``attempt`` of the prompt, while ``cancelling`` or not."""
    if isinstance(answer, e.PromptAnswered):
        cut = cut_answer(answer, empty_usage_means_cut=policy.empty_usage_means_cut)
        if cut is not None and not cancelling:  # a cancel pending: no retry, as for errors
            return _transient(prompt_id, cut, answer, attempt, policy)
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
    return _transient(prompt_id, provider, answer, attempt, policy, code=code, message=message)


def _transient(
    prompt_id: str,
    error: ProviderError,
    answer: e.PromptAnswered | e.PromptErrored,
    attempt: int,
    policy: SessionPolicy,
    *,
    code: int | None = None,
    message: str = "",
) -> a.RecordOutcome | a.RetryPrompt:
    """Sent again or ``failed``, as the retry policy decides; ``code`` and ``message``: the
    agent's error (None and empty for a cut answer, which was none)."""
    decision = policy.retry.decide(
        error, attempt, tool_started=answer.tool_started, random=answer.random, detail=message
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
        retry_after_s=error.retry_after_s,
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
