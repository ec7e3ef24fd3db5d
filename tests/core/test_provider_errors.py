"""Issue 25's pure core: which prompt failures are a provider's passing trouble, and the
retry policy's numbers. The errors are the pinned real agents' own answers (docs/agents.md)."""

from __future__ import annotations

from typing import Any

import pytest

from vm_agent.core import events as e
from vm_agent.core.answers import cut_answer
from vm_agent.core.provider_errors import (
    ProviderError,
    RetryPolicy,
    Transience,
    classify_prompt_error,
)

OV, RL = Transience.OVERLOADED, Transience.RATE_LIMITED
CUT = ProviderError(Transience.CUT)
CLAUDE_529 = (
    'Internal error: API Error: 529 {"type":"error","error":{"type":"overloaded_error",'
    '"message":"Overloaded"}}'
)
CLAUDE_429 = (
    'Internal error: API Error: 429 {"type":"error","error":{"type":"rate_limit_error",'
    '"message":"Number of request tokens has exceeded your rate limit."}}'
)


@pytest.mark.parametrize(
    ("code", "message", "data", "expected"),
    [
        # claude-agent-acp 0.23.1 after Claude Code's own retries
        (-32603, CLAUDE_529, None, ProviderError(OV, 529)),
        (-32603, CLAUDE_429, None, ProviderError(RL, 429)),
        # codex-acp 0.16.0: the detail in data
        (
            -32603,
            "Internal error",
            {
                "message": "Selected model is at capacity. Please try a different model.",
                "codex_error_info": "server_overloaded",
            },
            ProviderError(OV, None),
        ),
        (
            -32603,
            "Internal error",
            {
                "message": "exceeded retry limit, last status: 429 Too Many Requests",
                "codex_error_info": {
                    "response_too_many_failed_attempts": {"http_status_code": 429}
                },
            },
            ProviderError(RL, 429),
        ),
        (
            -32603,
            "Internal error",
            {
                "message": "unexpected status 529 <unknown status code>: The server is "
                "overloaded. Please try again later., url: http://127.0.0.1:18765/v1/responses",
                "codex_error_info": "other",
            },
            ProviderError(OV, 529),
        ),
        # gemini-cli 0.61.0: the HTTP status as the code
        (503, "The model is overloaded. Please try again later.", None, ProviderError(OV, 503)),
        (429, "Resource has been exhausted (e.g. check quota).", None, ProviderError(RL, 429)),
        # a wait the provider asked for, when the text carries it
        (
            -32603,
            "Rate limit reached for requests. Please try again in 20s.",
            None,
            ProviderError(RL, 429, 20.0),
        ),
        (-32603, "API Error: 429 retry-after: 1500ms", None, ProviderError(RL, 429, 1.5)),
        # not transient: a limit that does not pass by itself, another failure, our own codes
        (-32603, "Internal error", {"codex_error_info": "usage_limit_exceeded"}, None),
        (429, "You exceeded your current quota, check your plan and billing.", None, None),
        (-32603, "API Error: 400 invalid_request_error: prompt is too long", None, None),
        (-32603, "Internal error: the model backend is unavailable", None, None),
        (-32603, "Internal error", None, None),
        (-32000, "Authentication required: API Error: 529", None, None),
        (-32800, "cancelled (overloaded_error)", None, None),
        (-32603, "Internal error: function overloaded in tool", None, None),
    ],
)
def test_classifier(code: int, message: str, data: Any, expected: ProviderError | None) -> None:
    assert classify_prompt_error(code, message, data) == expected


P = RetryPolicy(attempts=3, base_s=2.0, max_s=60.0, jitter=0.25)
OVER = ProviderError(OV, 529)


@pytest.mark.parametrize(
    ("policy", "error", "attempt", "tool", "draw", "retry", "delay", "words"),
    [
        (P, OVER, 1, False, 0.0, True, 2.0, "overloaded (529)"),
        (P, OVER, 2, False, 0.0, True, 4.0, "overloaded (529)"),
        (P, OVER, 1, False, 0.999, True, 2.0 * 1.24975, ""),  # jitter: up to 25 % more
        (P, OVER, 3, False, 0.0, False, 0.0, "model provider overloaded (529) after 3 attempts"),
        (P, OVER, 1, True, 0.0, False, 0.0, "after the agent started a tool"),
        (RetryPolicy(attempts=1), OVER, 1, False, 0.0, False, 0.0, "after 1 attempt:"),
        # the cap bounds the backoff, its jitter too
        (RetryPolicy(attempts=10, base_s=2, max_s=5), OVER, 6, False, 0.9, True, 5.0, ""),
        # retry-after: honoured when longer than the backoff and within the cap
        (P, ProviderError(RL, 429, 10.0), 1, False, 0.0, True, 10.0, "rate limit (429)"),
        (P, ProviderError(RL, 429, 0.5), 1, False, 0.0, True, 2.0, ""),
        (P, ProviderError(RL, 429, 61.0), 1, False, 0.0, False, 0.0, "asks to wait 61 s"),
        # an answer cut mid-stream: the same policy, its own reason
        (P, CUT, 1, False, 0.0, True, 2.0, "model answer cut off mid-stream"),
        (P, CUT, 3, False, 0.0, False, 0.0, "tokens counted) after 3 attempts"),
        (P, CUT, 1, True, 0.0, False, 0.0, "tokens counted) after the agent started a tool"),
        # a draw out of range is clamped, never a negative or endless wait
        (P, OVER, 1, False, -5.0, True, 2.0, ""),
        (P, OVER, 1, False, 7.0, True, 2.5, ""),
    ],
)
def test_policy(  # noqa: PLR0917 - one parameter per column of the table
    policy: RetryPolicy,
    error: ProviderError,
    attempt: int,
    tool: bool,
    draw: float,
    retry: bool,
    delay: float,
    words: str,
) -> None:
    decision = policy.decide(error, attempt, tool_started=tool, random=draw, detail="the agent's")
    assert decision.retry is retry
    assert decision.delay_s == pytest.approx(delay)
    assert words in decision.reason
    if not retry:
        assert decision.reason.endswith(": the agent's")


def answered(
    stop: str = "end_turn",
    tokens: tuple[int | None, int | None] = (0, 0),
    *,
    text: bool = True,
    billed: bool = True,
) -> e.PromptAnswered:
    """An answer, as claude-agent-acp 0.23.1 gave it for a turn the provider cut (the
    defaults): ``end_turn``, text shown, a request billed, 0 input and 0 output tokens."""
    return e.PromptAnswered(1.0, stop, text, *tokens, cost_rose=billed)


@pytest.mark.parametrize(
    ("answer", "declared", "expected"),
    [
        (answered(), True, CUT),
        # the agent's catalog entry does not declare the signal
        (answered(), False, None),
        # the answer carried no usage, or only some of it
        (answered(tokens=(None, None)), True, None),
        (answered(tokens=(0, None)), True, None),
        (answered(tokens=(None, 0)), True, None),
        # tokens counted: a whole turn (the same stand-in: 12 and 5), or a cut after one
        (answered(tokens=(12, 5)), True, None),
        (answered(tokens=(12, 0)), True, None),
        (answered(tokens=(0, 5)), True, None),
        # no text streamed (claude's stale end of a failed turn: empty, at once)
        (answered(text=False), True, None),
        # nothing billed: no model request (claude's local /context: text, no token)
        (answered(billed=False), True, None),
        # another stop reason
        (answered("cancelled"), True, None),
        (answered("max_tokens"), True, None),
        (answered("max_turn_requests"), True, None),
        (answered("refusal"), True, None),
    ],
)
def test_cut_answer(
    answer: e.PromptAnswered, declared: bool, expected: ProviderError | None
) -> None:
    assert cut_answer(answer, empty_usage_means_cut=declared) == expected
