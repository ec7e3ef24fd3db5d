"""``vm-agent prompt``: one prompt against one agent, through the daemon's own session path.

Only the arguments live here; the run (and its heavy imports) is in ``prompt_run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group()
    who.add_argument("--agent", default="fake", help="agent name from the catalog (default: fake)")
    who.add_argument("--agent-command", help='the agent\'s command line, e.g. "codex-acp --flag"')
    p.add_argument("--agents-file", type=Path, help="TOML catalog overrides")
    p.add_argument("--cwd", type=Path, default=Path.cwd(), help="the session's working directory")
    p.add_argument("--permission", choices=("allow", "reject"), default="reject")
    p.add_argument("--timeout", type=float, default=None, help="prompt deadline in seconds")
    p.add_argument(
        "--start-timeout",
        type=_positive,
        default=None,
        help="deadline in seconds on the agent's start: initialize and session/new "
        "(default VM_AGENT_START_TIMEOUT_S, else 60)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object a line, outcome last")
    p.add_argument("text", help="the prompt text")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from vm_agent.cli.prompt_run import run as run_prompt

    return run_prompt(args)
