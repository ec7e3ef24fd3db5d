"""Token usage and cost that agents report, reduced to what is kept and summed.

ACP carries usage two ways (both unstable in the schema, both optional):
- the ``session/prompt`` answer's ``usage``: the tokens of that turn (``inputTokens``,
  ``outputTokens``, ``cachedReadTokens``, ``cachedWriteTokens``, ``thoughtTokens``,
  ``totalTokens``); claude-agent-acp resets its count at each prompt, so it is per turn;
- ``session/update`` ``usage_update``: ``used``/``size`` are the context window (not
  tokens spent: never summed) and ``cost`` is the session's *cumulative* cost so far.

So a prompt's tokens come from its answer and its cost is the rise of the cumulative cost
over the prompt (a new agent process starts counting from zero again: a fall is a reset).
Numbers from an agent or a node are untrusted: a field that is not a plain non-negative
number within bounds is dropped (``rejected`` names it), never trusted or fatal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# More than any real session spends; larger is a broken or hostile reporter.
MAX_TOKENS = 10**12
MAX_COST = 10.0**6
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_CURRENCIES = 4

# Our field names (snake case, as in the node's events), and ACP's.
TOKEN_FIELDS: dict[str, str] = {
    "input_tokens": "inputTokens",
    "output_tokens": "outputTokens",
    "cached_read_tokens": "cachedReadTokens",
    "cached_write_tokens": "cachedWriteTokens",
    "thought_tokens": "thoughtTokens",
    "total_tokens": "totalTokens",
}


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens by field (only those reported) and cost by ISO 4217 currency."""

    tokens: Mapping[str, int] = field(default_factory=dict)
    cost: Mapping[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tokens or self.cost)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.tokens)
        if self.cost:
            out["cost"] = {c: round(a, 9) for c, a in self.cost.items()}
        return out

    def to_camel(self) -> dict[str, Any]:
        """As the control plane's API shows it (camelCase, like ACP)."""
        out: dict[str, Any] = {TOKEN_FIELDS[k]: v for k, v in self.tokens.items()}
        if self.cost:
            out["cost"] = {c: round(a, 9) for c, a in self.cost.items()}
        return out


def token_count(value: Any) -> int | None:
    """A token count as reported, if it is one (bool is not, nor 1.5, nor -1)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def cost_amount(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    amount = float(value)
    if math.isfinite(amount) and 0.0 <= amount <= MAX_COST:
        return amount
    return None


def _cost_of(raw: Any, rejected: list[str]) -> tuple[str, float] | None:
    if not isinstance(raw, dict):
        if raw is not None:
            rejected.append("cost")
        return None
    currency, amount = raw.get("currency"), cost_amount(raw.get("amount"))
    if not isinstance(currency, str) or not _CURRENCY.match(currency) or amount is None:
        rejected.append("cost")
        return None
    return currency, amount


def from_prompt_answer(raw: Any, rejected: list[str] | None = None) -> Usage:
    """The tokens of one turn from a ``session/prompt`` answer's ``usage`` (ACP names)."""
    rejected = [] if rejected is None else rejected
    if not isinstance(raw, dict):
        if raw is not None:
            rejected.append("usage")
        return Usage()
    tokens: dict[str, int] = {}
    for ours, theirs in TOKEN_FIELDS.items():
        if theirs not in raw:
            continue
        count = token_count(raw[theirs])
        if count is None:
            rejected.append(theirs)
        else:
            tokens[ours] = count
    return Usage(tokens)


def cumulative_cost(update: Any) -> tuple[str, float] | None:
    """The session's cumulative cost a ``usage_update`` carries, if it is a sound one."""
    if not isinstance(update, dict) or update.get("sessionUpdate") != "usage_update":
        return None
    return _cost_of(update.get("cost"), [])


def parse(raw: Any, rejected: list[str] | None = None) -> Usage:
    """Our own form (``Usage.to_json``) read back from untrusted JSON (a node's event)."""
    rejected = [] if rejected is None else rejected
    if not isinstance(raw, dict):
        if raw is not None:
            rejected.append("usage")
        return Usage()
    tokens: dict[str, int] = {}
    for name in TOKEN_FIELDS:
        if name in raw:
            count = token_count(raw[name])
            if count is None:
                rejected.append(name)
            else:
                tokens[name] = count
    cost: dict[str, float] = {}
    raw_cost = raw.get("cost")
    if isinstance(raw_cost, dict):
        for currency, value in list(raw_cost.items())[:MAX_CURRENCIES]:
            amount = cost_amount(value)
            if isinstance(currency, str) and _CURRENCY.match(currency) and amount is not None:
                cost[currency] = amount
            else:
                rejected.append(f"cost.{str(currency)[:8]}")
    elif raw_cost is not None:
        rejected.append("cost")
    return Usage(tokens, cost)


def add(*parts: Usage) -> Usage:
    """The sum; a field reported by no part stays absent (unknown is not zero)."""
    tokens: dict[str, int] = {}
    cost: dict[str, float] = {}
    for part in parts:
        for name, count in part.tokens.items():
            tokens[name] = tokens.get(name, 0) + count
        for currency, amount in part.cost.items():
            if currency in cost or len(cost) < MAX_CURRENCIES:
                cost[currency] = cost.get(currency, 0.0) + amount
    return Usage(tokens, cost)


def total(parts: Iterable[Usage]) -> Usage:
    return add(*parts)


def cost_rise(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """A prompt's cost from the cumulative cost before it and at its end, per currency.

    A currency first seen in the prompt counts from zero; a fall means the agent's count
    started again (a new process), so the new figure is all this prompt's.
    """
    rise: dict[str, float] = {}
    for currency, now in after.items():
        was = before.get(currency, 0.0)
        spent = now - was if now >= was else now
        if spent > 0:
            rise[currency] = spent
    return rise


class PromptMeter:
    """Follows one session's cumulative cost and gives each prompt its share.

    ``restart`` when a new agent process takes over (its cumulative cost starts anew).
    """

    def __init__(self) -> None:
        self._latest: dict[str, float] = {}
        self._at_start: dict[str, float] = {}
        self._turn = Usage()

    def restart(self) -> None:
        self._latest = {}
        self._at_start = {}

    def prompt_started(self) -> None:
        self._at_start = dict(self._latest)
        self._turn = Usage()

    def noted_update(self, update: Any) -> None:
        cost = cumulative_cost(update)
        if cost is not None:
            currency, amount = cost
            if currency in self._latest or len(self._latest) < MAX_CURRENCIES:
                self._latest[currency] = amount

    def answered(self, usage: Usage) -> None:
        self._turn = usage

    def prompt_ended(self) -> Usage:
        """This prompt's usage: the answer's tokens and the cost's rise since its start."""
        spent = Usage(self._turn.tokens, cost_rise(self._at_start, self._latest))
        self._at_start = dict(self._latest)
        self._turn = Usage()
        return spent
