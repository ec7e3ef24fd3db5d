"""One tiny run of each benchmark against the real daemon, so none of them can rot.

No timing assertions: only that each ran and produced well-formed figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import pg_ingest, report
from benchmarks.__main__ import main, run_all
from benchmarks.registry import BENCHMARKS
from benchmarks.stats import Figure
from tests.postgres import postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _well_formed(figure: Figure) -> None:
    assert figure.benchmark in BENCHMARKS
    assert figure.name and figure.unit
    for summary in (figure.value, figure.baseline):
        if summary is None:
            continue
        assert summary.n >= 1
        assert all(math.isfinite(x) for x in (summary.median, summary.low, summary.high))
        assert summary.low <= summary.median <= summary.high
    if figure.baseline is not None:
        assert figure.baseline_name
    json.dumps(figure.to_json())  # serializable as written to latest.json


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
async def test_each_benchmark_runs_at_smoke_size(name: str) -> None:
    if name == pg_ingest.NAME:
        postgres_url()  # skips without the tests' PostgreSQL (fails under CI)
    figures, errors = await run_all([name], "smoke", say=lambda _text: None)
    assert errors == {}
    assert figures
    for figure in figures:
        _well_formed(figure)
    text = report.markdown(figures, report.machine(), "smoke")
    assert text.count("\n| ") == len(figures) + 1  # header row and one row per figure


def test_command_line_writes_json_and_markdown(tmp_path: Path) -> None:
    assert main(["--smoke", "--only", "relay_latency", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["mode"] == "smoke"
    assert doc["machine"]["nproc"] >= 1
    assert {f["benchmark"] for f in doc["figures"]} == {"relay_latency"}
    assert "| relay_latency: " in (tmp_path / "latest.md").read_text()
