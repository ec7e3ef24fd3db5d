"""The terminals' pure parts: byte budgets, which terminals a dead daemon left open, the screen."""

from __future__ import annotations

import json

import pytest

from vm_agent.eventlog import Event
from vm_agent.terminals.budget import ByteBudget
from vm_agent.terminals.orphans import still_open
from vm_agent.terminals.screen import Screen


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (now, size) -> taken?
        ([(0.0, 100)], [True]),
        ([(0.0, 100), (0.0, 1)], [True, False]),  # the burst is spent
        ([(0.0, 100), (0.5, 50)], [True, True]),  # half a second refills 50
        ([(0.0, 100), (0.5, 51)], [True, False]),
        ([(0.0, 101)], [False]),  # more than the burst never passes
        ([(0.0, 100), (10.0, 100), (10.0, 1)], [True, True, False]),  # refill caps at burst
        ([(5.0, 60), (4.0, 40), (4.0, 1)], [True, True, False]),  # a clock going back adds nothing
    ],
)
def test_input_budget(steps: list[tuple[float, int]], expected: list[bool]) -> None:
    budget = ByteBudget(rate=100, burst=100)
    assert [budget.take(now, size) for now, size in steps] == expected


@pytest.mark.parametrize(
    ("steps", "pauses"),
    [
        ([(0.0, 50)], [0.0]),
        ([(0.0, 100), (0.0, 100)], [0.0, 1.0]),  # 100 bytes in debt at 100/s: one second
        ([(0.0, 300)], [2.0]),  # a large read goes into debt by all of it past the burst
        ([(0.0, 200), (1.0, 100)], [1.0, 1.0]),  # the pause was taken: still a second behind
        ([(0.0, 200), (2.0, 100)], [1.0, 0.0]),
    ],
)
def test_output_budget_pauses_instead_of_dropping(
    steps: list[tuple[float, int]], pauses: list[float]
) -> None:
    budget = ByteBudget(rate=100, burst=100)
    assert [budget.wait_for(now, size) for now, size in steps] == pytest.approx(pauses)


def _ev(session: str, type_: str, terminal: str) -> Event:
    payload = json.dumps({"type": type_, "data": {"terminal_id": terminal}})
    return Event(0, session, 0, 0.0, type_, payload)


def test_still_open_after_a_crash() -> None:
    events = [
        _ev("s1", "terminal.opened", "a"),
        _ev("s1", "terminal.opened", "b"),
        _ev("s2", "terminal.opened", "a"),  # same id, another session: another terminal
        _ev("s1", "terminal.exited", "a"),
        _ev("s3", "terminal.exited", "z"),  # an end without a start is ignored
    ]
    assert still_open(events) == [("s1", "b"), ("s2", "a")]
    assert still_open([]) == []


def test_the_screen_is_the_state_not_the_history() -> None:
    screen = Screen(10, 3)
    screen.mark(4)
    assert screen.snapshot()["seq"] == 4
    screen.feed("old line\r\n\x1b[2J\x1b[Hnew", 5)
    screen.feed("\x1b[2;3Hx", 6)
    snap = screen.snapshot()
    assert (snap["seq"], snap["lines"]) == (6, ["new", "  x", ""])
    assert snap["cursor"] == {"x": 3, "y": 1}
    assert snap["ansi"].startswith("\x1b[H\x1b[2J") and snap["ansi"].endswith("\x1b[2;4H")
    screen.resize(20, 5)
    assert (screen.snapshot()["cols"], screen.snapshot()["rows"]) == (20, 5)


def test_a_flood_nobody_watched_is_drawn_from_its_tail() -> None:
    screen = Screen(20, 3, max_pending=100)
    for i in range(1000):
        screen.feed(f"line-{i}\r\n", i + 1)
    snap = screen.snapshot()
    assert snap["seq"] == 1000
    assert snap["lines"] == ["line-998", "line-999", ""]
    assert 0 < screen.skipped < 1000 * 10
