"""Usage reports reduced and summed (vm_agent.core.usage): tables of what agents and nodes send."""

from __future__ import annotations

import math
from typing import Any

import pytest

from vm_agent.core import usage as u


@pytest.mark.parametrize(
    ("raw", "tokens", "rejected"),
    [
        (None, {}, []),
        ({}, {}, []),
        (
            {"inputTokens": 10, "outputTokens": 20, "totalTokens": 30},
            {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30},
            [],
        ),
        # claude-agent-acp's shape, cache fields included
        (
            {"inputTokens": 1, "outputTokens": 2, "cachedReadTokens": 3, "cachedWriteTokens": 4},
            {
                "input_tokens": 1,
                "output_tokens": 2,
                "cached_read_tokens": 3,
                "cached_write_tokens": 4,
            },
            [],
        ),
        ({"inputTokens": 7.0}, {"input_tokens": 7}, []),  # a whole float is a count
        ({"inputTokens": -1, "outputTokens": 3}, {"output_tokens": 3}, ["inputTokens"]),
        ({"inputTokens": "12"}, {}, ["inputTokens"]),
        ({"inputTokens": True}, {}, ["inputTokens"]),
        ({"inputTokens": 1.5}, {}, ["inputTokens"]),
        ({"inputTokens": 10**13}, {}, ["inputTokens"]),
        ({"totalTokens": float("inf")}, {}, ["totalTokens"]),
        ({"totalTokens": float("nan")}, {}, ["totalTokens"]),
        ({"inputTokens": None}, {}, ["inputTokens"]),
        ({"unknown": 5, "_meta": {"x": 1}}, {}, []),
        ("lots", {}, ["usage"]),
        ([1, 2], {}, ["usage"]),
    ],
)
def test_prompt_answer_usage(raw: Any, tokens: dict[str, int], rejected: list[str]) -> None:
    seen: list[str] = []
    assert u.from_prompt_answer(raw, seen).tokens == tokens
    assert seen == rejected


@pytest.mark.parametrize(
    ("update", "cost"),
    [
        ({"sessionUpdate": "usage_update", "used": 5, "size": 9}, None),
        (
            {"sessionUpdate": "usage_update", "cost": {"amount": 0.5, "currency": "USD"}},
            ("USD", 0.5),
        ),
        ({"sessionUpdate": "usage_update", "cost": {"amount": 0, "currency": "EUR"}}, ("EUR", 0.0)),
        ({"sessionUpdate": "usage_update", "cost": {"amount": -1, "currency": "USD"}}, None),
        ({"sessionUpdate": "usage_update", "cost": {"amount": 1e9, "currency": "USD"}}, None),
        ({"sessionUpdate": "usage_update", "cost": {"amount": "1", "currency": "USD"}}, None),
        ({"sessionUpdate": "usage_update", "cost": {"amount": 1, "currency": "usd"}}, None),
        ({"sessionUpdate": "usage_update", "cost": {"amount": 1, "currency": "US$X"}}, None),
        ({"sessionUpdate": "usage_update", "cost": {"amount": math.nan, "currency": "USD"}}, None),
        ({"sessionUpdate": "usage_update", "cost": "free"}, None),
        ({"sessionUpdate": "agent_message_chunk", "cost": {"amount": 1, "currency": "USD"}}, None),
        (None, None),
        ("usage_update", None),
    ],
)
def test_cumulative_cost_of_an_update(update: Any, cost: tuple[str, float] | None) -> None:
    assert u.cumulative_cost(update) == cost


@pytest.mark.parametrize(
    ("before", "after", "rise"),
    [
        ({}, {}, {}),
        ({}, {"USD": 0.3}, {"USD": 0.3}),  # first report: all of it is this prompt's
        ({"USD": 0.3}, {"USD": 0.5}, {"USD": 0.2}),  # cumulative: only the rise
        ({"USD": 0.5}, {"USD": 0.5}, {}),  # no new report: nothing spent (no double count)
        ({"USD": 0.5}, {"USD": 0.1}, {"USD": 0.1}),  # fell: a new process counts anew
        ({"USD": 0.5}, {"USD": 0.5, "EUR": 0.2}, {"EUR": 0.2}),
    ],
)
def test_cost_rise(
    before: dict[str, float], after: dict[str, float], rise: dict[str, float]
) -> None:
    assert u.cost_rise(before, after) == pytest.approx(rise)


def _update(amount: float) -> dict[str, Any]:
    return {
        "sessionUpdate": "usage_update",
        "used": 1,
        "size": 2,
        "cost": {"amount": amount, "currency": "USD"},
    }


def test_meter_gives_each_prompt_its_share_of_a_cumulative_cost() -> None:
    m = u.PromptMeter()
    m.prompt_started()
    m.noted_update(_update(0.1))
    m.noted_update(_update(0.25))  # several reports in a turn: the last one counts
    m.answered(u.from_prompt_answer({"inputTokens": 3, "outputTokens": 4}))
    first = m.prompt_ended()
    assert first.tokens == {"input_tokens": 3, "output_tokens": 4}
    assert first.cost == pytest.approx({"USD": 0.25})

    m.prompt_started()  # a turn without any report: nothing
    assert not m.prompt_ended()

    m.prompt_started()
    m.noted_update(_update(0.4))
    assert m.prompt_ended().cost == pytest.approx({"USD": 0.15})

    m.restart()  # a new process (recovered): its count starts at zero
    m.prompt_started()
    m.noted_update(_update(0.05))
    assert m.prompt_ended().cost == pytest.approx({"USD": 0.05})


def test_meter_answer_of_one_prompt_is_not_kept_for_the_next() -> None:
    m = u.PromptMeter()
    m.prompt_started()
    m.answered(u.from_prompt_answer({"inputTokens": 3}))
    assert m.prompt_ended().tokens == {"input_tokens": 3}
    m.prompt_started()
    assert m.prompt_ended().tokens == {}


@pytest.mark.parametrize(
    ("raw", "expected", "rejected"),
    [
        ({"input_tokens": 3, "cost": {"USD": 0.5}}, u.Usage({"input_tokens": 3}, {"USD": 0.5}), []),
        ({"input_tokens": -3}, u.Usage(), ["input_tokens"]),
        ({"input_tokens": "3"}, u.Usage(), ["input_tokens"]),
        ({"output_tokens": 10**15}, u.Usage(), ["output_tokens"]),
        ({"cost": {"USD": -1}}, u.Usage(), ["cost.USD"]),
        ({"cost": {"usd": 1}}, u.Usage(), ["cost.usd"]),
        ({"cost": {"USD": "1"}}, u.Usage(), ["cost.USD"]),
        ({"cost": [1]}, u.Usage(), ["cost"]),
        ("x", u.Usage(), ["usage"]),
        (None, u.Usage(), []),
    ],
)
def test_parse_our_form_from_untrusted_json(
    raw: Any, expected: u.Usage, rejected: list[str]
) -> None:
    seen: list[str] = []
    assert u.parse(raw, seen) == expected
    assert seen == rejected


def test_sum_keeps_unknown_fields_absent_and_currencies_apart() -> None:
    a = u.Usage({"input_tokens": 1}, {"USD": 0.5})
    b = u.Usage({"input_tokens": 2, "output_tokens": 5}, {"EUR": 1.0, "USD": 0.25})
    total = u.total([a, b, u.Usage()])
    assert total.tokens == {"input_tokens": 3, "output_tokens": 5}
    assert total.cost == pytest.approx({"USD": 0.75, "EUR": 1.0})
    assert total.to_camel() == {
        "inputTokens": 3,
        "outputTokens": 5,
        "cost": {"USD": 0.75, "EUR": 1.0},
    }
    assert u.total([]).to_json() == {}


def test_round_trip_through_json() -> None:
    spent = u.Usage({"input_tokens": 3, "total_tokens": 9}, {"USD": 0.125})
    assert u.parse(spent.to_json()) == spent
