"""The statistics and the table: pure functions, table-tested."""

from __future__ import annotations

import pytest

from benchmarks.report import markdown
from benchmarks.stats import Figure, Goal, Summary, percentile


@pytest.mark.parametrize(
    ("samples", "q", "expected"),
    [
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0),
        ([3.0, 1.0, 2.0], 25, 1.5),
        (list(map(float, range(101))), 99, 99.0),
    ],
)
def test_percentile(samples: list[float], q: float, expected: float) -> None:
    assert percentile(samples, q) == pytest.approx(expected)


@pytest.mark.parametrize(("samples", "q"), [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_refuses(samples: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(samples, q)


def test_summary() -> None:
    s = Summary.of([4.0, 1.0, 3.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (3.0, 1.0, 10.0, 5)
    assert (s.q1, s.q3) == (2.0, 4.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    with pytest.raises(ValueError):
        Summary.of([])


@pytest.mark.parametrize(
    ("goal", "value", "baseline", "met"),
    [
        (Goal("ratio >= 0.5", 0.5, "higher", on_ratio=True), 60.0, 100.0, True),
        (Goal("ratio >= 0.5", 0.5, "higher", on_ratio=True), 40.0, 100.0, False),
        (Goal("ratio >= 0.5", 0.5, "higher", on_ratio=True), 40.0, None, None),
        (Goal("< 5 ms", 5.0, "lower"), 4.9, None, True),
        (Goal("< 5 ms", 5.0, "lower"), 5.1, 1.0, False),
    ],
)
def test_goals(goal: Goal, value: float, baseline: float | None, met: bool | None) -> None:
    figure = Figure(
        benchmark="b",
        name="n",
        unit="u",
        value=Summary.of([value]),
        baseline_name="base" if baseline is not None else None,
        baseline=Summary.of([baseline]) if baseline is not None else None,
        goals=(goal,),
    )
    assert figure.verdicts() == [(goal, met)]
    doc = figure.to_json()
    assert doc["goals"][0]["met"] is met
    assert doc["ratio"] == (None if baseline is None else value / baseline)


def test_markdown_table_has_a_row_per_figure_and_the_machine() -> None:
    figures = [
        Figure(
            "relay",
            "a",
            "events/s",
            Summary.of([10.0, 12.0]),
            "raw",
            Summary.of([20.0]),
            (Goal("ratio >= 0.5", 0.5, "higher", on_ratio=True),),
            note="why",
        ),
        Figure("relay", "b", "ms", Summary.of([1.5])),
    ]
    info = {
        "nproc": 2,
        "cpu_model": "Test CPU",
        "memory_mb": 1024,
        "python": "3.11.0",
        "implementation": "CPython",
        "kernel": "6.0",
        "finished": "now",
    }
    text = markdown(figures, info, "quick")
    rows = [line for line in text.splitlines() if line.startswith("| relay: ")]
    assert len(rows) == 2
    assert "0.55" in rows[0] and "met" in rows[0]
    assert "Test CPU" in text and "2 CPUs" in text
    assert "- relay: a: why" in text


def test_a_void_figure_judges_no_goal() -> None:
    figure = Figure(
        "footprint",
        "cpu",
        "%",
        Summary.of([10.0]),
        goals=(Goal("< 50%", 50.0, "lower"),),
        void="the load was not reached",
    )
    assert figure.verdicts() == [(figure.goals[0], None)]
    assert figure.to_json()["goals"][0]["met"] is None
    info = {
        "nproc": 2,
        "cpu_model": "x",
        "memory_mb": 1,
        "python": "3.11",
        "kernel": "6",
        "implementation": "CPython",
    }
    assert "not assessable: the load was not reached" in markdown([figure], info, "quick")
