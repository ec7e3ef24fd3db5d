"""The `vm-agent` command line: one sub-command per job."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("vm-agent: not yet implemented", file=sys.stderr)
    return 2
