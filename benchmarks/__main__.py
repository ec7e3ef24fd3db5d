"""`python -m benchmarks [--quick] [--only NAME]`: run, print the table, write results."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import anyio

from benchmarks import harness as h
from benchmarks import report
from benchmarks.registry import BENCHMARKS
from benchmarks.stats import Figure

RESULTS = Path(__file__).resolve().parent / "results"


async def run_all(
    names: list[str], scale: str, say: Callable[[str], None] = print
) -> tuple[list[Figure], dict[str, str]]:
    """Runs the named benchmarks in order; a failing one is recorded, the rest still run."""
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="vm-agent-bench-") as tmp:
        root = Path(tmp)
        async with h.control_plane(root / "control-plane") as cp:
            for name in names:
                ctx = h.Context(cp=cp, root=root / name, scale=scale, say=say)
                say(f"{name} ...")
                started = time.monotonic()
                try:
                    got = await BENCHMARKS[name](ctx)
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    say(traceback.format_exc())
                    continue
                figures += got
                say(f"{name}: done in {time.monotonic() - started:.1f}s")
    return figures, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    sizes.add_argument("--smoke", action="store_true", help="tiny sizes (checks, not figures)")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    scale = "smoke" if args.smoke else "quick" if args.quick else "full"
    names = args.only or list(BENCHMARKS)
    figures, errors = anyio.run(run_all, names, scale)
    info = report.machine()
    json_path, md_path = report.write(args.out, figures, info, scale, errors)
    print()
    print(md_path.read_text())
    print(f"written: {json_path} and {md_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
