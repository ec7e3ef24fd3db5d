"""Transient model-provider errors (issue 25): which prompt failures are worth sending again,
and when (docs/outcomes.md, *Transient provider errors*).

A real agent reports its model provider's refusal as the JSON-RPC error of ``session/prompt``,
after its own retries; each does it its own way (measured with the pinned versions):

- claude-agent-acp: -32603, message ``Internal error: API Error: 529 {"type":"error",
  "error":{"type":"overloaded_error",...}}`` (429: ``rate_limit_error``);
- codex-acp: -32603 ``Internal error``, the detail in ``data``: ``{"message": "...",
  "codex_error_info": "server_overloaded"}`` (503), ``{"response_too_many_failed_attempts":
  {"http_status_code": 429}}`` (429), ``"other"`` with ``unexpected status 529`` (529);
- gemini-cli: the HTTP status itself as the code (503, 429) and Google's message.

Error text is all there is to go on, so this classifier reads it; it is a pure function of
the error, tested with a table of those answers. Only overload and rate limits are
transient: a quota or a usage limit does not pass by itself, and anything else (a bad
request, an internal bug) would fail the same way again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

AUTH_REQUIRED_CODE = -32000
REQUEST_CANCELLED_CODE = -32800


class Transience(StrEnum):
    OVERLOADED = "overloaded"  # the provider has no capacity now (529, 503)
    RATE_LIMITED = "rate_limited"  # too many requests for now (429)
    # The provider ended the answer's stream with an error midway, and the agent ended the
    # turn as if it were whole (core/answers.py, ``cut_answer``).
    CUT = "cut"


@dataclass(frozen=True, slots=True)
class ProviderError:
    """A prompt failure the model provider caused and time may cure."""

    kind: Transience
    status: int | None = None  # the provider's HTTP status, when the error says it
    retry_after_s: float | None = None  # how long the provider asked to wait, if it said

    def describe(self) -> str:
        what = {
            Transience.OVERLOADED: "model provider overloaded",
            Transience.RATE_LIMITED: "model provider rate limit",
            Transience.CUT: (
                "model answer cut off mid-stream (the agent ended the turn with no tokens counted)"
            ),
        }[self.kind]
        return f"{what} ({self.status})" if self.status is not None else what


# Words that are a provider's, not ours: its error types and codes, in every agent's form.
_OVERLOADED = re.compile(
    r"overloaded_error|server_overloaded|(?:is|are|server) overloaded|at capacity|"
    r"\b(?:api error|status|http)\W{0,3}(?:529|503)\b|(?-i:\bUNAVAILABLE\b)",
    re.IGNORECASE,
)
_RATE_LIMITED = re.compile(
    r"rate_limit_error|rate_limit_exceeded|rate limit|too many requests|"
    r"\b(?:api error|status|http)\W{0,3}429\b|(?-i:\bRESOURCE_EXHAUSTED\b)",
    re.IGNORECASE,
)
# Limits that do not pass in seconds: retrying only spends the provider's patience.
_LASTING = re.compile(
    r"usage_limit|usage limit|insufficient_quota|exceeded your current quota|quota exceeded|"
    r"billing|credit balance",
    re.IGNORECASE,
)
_STATUS = re.compile(r"\b(?:api error|status|http_status_code)\W{0,3}(\d{3})\b", re.IGNORECASE)
_RETRY_AFTER = re.compile(
    r"(?:retry[- _]after|try again in)\W{0,3}(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?)?\b",
    re.IGNORECASE,
)


def classify_prompt_error(code: int, message: str, data: Any = None) -> ProviderError | None:
    """A ``session/prompt`` error answer, as the agent gave it: transient or not (None)."""
    if code in (AUTH_REQUIRED_CODE, REQUEST_CANCELLED_CODE):
        return None
    text = f"{message} {_flatten(data)}"
    if _LASTING.search(text):
        return None
    # gemini-cli answers with the provider's HTTP status as the JSON-RPC code.
    status = code if code in (429, 503, 529) else _status(text)
    if status == 429 or _RATE_LIMITED.search(text):
        return ProviderError(Transience.RATE_LIMITED, status or 429, _retry_after(text))
    if status in (503, 529) or _OVERLOADED.search(text):
        return ProviderError(Transience.OVERLOADED, status, _retry_after(text))
    return None


def _flatten(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    try:
        return json.dumps(data, default=str)[:4096]
    except (TypeError, ValueError):
        return ""


def _status(text: str) -> int | None:
    for match in _STATUS.finditer(text):
        status = int(match.group(1))
        if status in (429, 503, 529):
            return status
    return None


def _retry_after(text: str) -> float | None:
    match = _RETRY_AFTER.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000 if (match.group(2) or "").lower() == "ms" else value


# -- the policy -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Send the prompt again after ``delay_s`` (``retry``), or end it ``failed`` with
    ``reason``."""

    retry: bool
    delay_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a prompt is sent again after a transient provider error.

    ``attempts``: sends of one prompt in all (1: never again). Backoff: ``base_s`` doubling
    per retry up to ``max_s``, plus up to ``jitter`` of itself (so sessions that failed
    together do not come back together). A provider's ``retry-after`` is honoured when it
    fits under ``max_s``; a longer one ends the prompt at once (waiting less is pointless,
    waiting more is not bounded).
    """

    attempts: int = 3
    base_s: float = 2.0
    max_s: float = 60.0
    jitter: float = 0.25

    def decide(
        self,
        error: ProviderError,
        attempt: int,
        *,
        tool_started: bool,
        random: float,
        detail: str = "",
    ) -> RetryDecision:
        """After attempt number ``attempt`` (1-based) failed with ``error``.

        ``tool_started``: the agent began a tool during the attempt: never again, as the
        tool may have changed things a second turn would change twice. ``random``: in
        [0, 1), the jitter's draw (the caller's; this stays pure). ``detail``: the agent's
        own message, kept in the failure's reason.
        """
        suffix = f": {detail}" if detail else ""
        if tool_started:
            return RetryDecision(
                False, reason=f"{error.describe()} after the agent started a tool{suffix}"
            )
        if attempt >= self.attempts:
            tries = f"{attempt} attempt" + ("s" if attempt != 1 else "")
            return RetryDecision(False, reason=f"{error.describe()} after {tries}{suffix}")
        backoff = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        delay = min(self.max_s, backoff * (1 + self.jitter * min(max(random, 0.0), 1.0)))
        if error.retry_after_s is not None:
            if error.retry_after_s > self.max_s:
                return RetryDecision(
                    False,
                    reason=(
                        f"{error.describe()}: the provider asks to wait "
                        f"{error.retry_after_s:g} s, more than {self.max_s:g} s{suffix}"
                    ),
                )
            delay = max(delay, error.retry_after_s)
        return RetryDecision(True, delay_s=delay, reason=error.describe())
