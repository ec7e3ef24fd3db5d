"""A deterministic fake ACP agent for development, tests and benchmarks.

`python -m vm_agent.fake_agent --scenario NAME` (or `vm-agent fake-agent`)
speaks ACP as line-delimited JSON-RPC on stdin/stdout; see `config.SCENARIOS`.
Imports stay lazy so that a respawn starts quickly.

May import the daemon's lower layers; nothing imports it but the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake agent with these flags (default: sys.argv[1:]); returns the exit code."""
    from vm_agent.fake_agent.run import main as run_main  # noqa: PLC0415

    return run_main(argv)


__all__ = ["main"]
