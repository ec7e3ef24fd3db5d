"""The results table (markdown, also printed) and JSON, with the machine's description."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.stats import Figure, Summary


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory and Python version, read from /proc where Linux has it."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_mb": mem_kb // 1024,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
    }


def _num(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(summary: Summary) -> str:
    return f"{_num(summary.median)} [{_num(summary.low)}-{_num(summary.high)}]"


def _goal_cell(figure: Figure) -> str:
    parts = []
    for goal, met in figure.verdicts():
        mark = "n/a" if met is None else ("met" if met else "NOT met")
        if figure.void:
            mark = f"not assessable: {figure.void}"
        parts.append(f"{goal.text}: {mark}")
    return "; ".join(parts)


def markdown(figures: Sequence[Figure], info: dict[str, Any], mode: str) -> str:
    lines = [
        "# vm-agent benchmarks",
        "",
        f"Run {info.get('finished', '')} ({mode}); machine: {info['nproc']} CPUs "
        f"({info['cpu_model']}), {info['memory_mb']} MB memory, "
        f"{info['implementation']} {info['python']}, Linux {info['kernel']}.",
        "",
        "Each value is the median over repeated runs, [min-max] across runs; the baseline is "
        "measured in the same run on the same machine; ratio = value / baseline.",
        "",
        "| figure | value | unit | baseline | baseline value | ratio | runs | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.3g}"
        base = _cell(f.baseline) if f.baseline is not None else ""
        lines.append(
            f"| {f.benchmark}: {f.name} | {_cell(f.value)} | {f.unit} | "
            f"{f.baseline_name or ''} | {base} | {ratio} | {f.value.n} | {_goal_cell(f)} |"
        )
    notes = [f"- {f.benchmark}: {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def write(
    directory: Path,
    figures: Sequence[Figure],
    info: dict[str, Any],
    mode: str,
    errors: dict[str, str],
) -> tuple[Path, Path]:
    """Writes latest.json and latest.md under `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    info = {**info, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    doc = {
        "machine": info,
        "mode": mode,
        "figures": [f.to_json() for f in figures],
        "errors": errors,
    }
    json_path = directory / "latest.json"
    md_path = directory / "latest.md"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(figures, info, mode)
    if errors:
        text += "\nBenchmarks that failed:\n" + "".join(
            f"- {name}: {why}\n" for name, why in errors.items()
        )
    md_path.write_text(text)
    return json_path, md_path
