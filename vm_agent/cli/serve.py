"""``vm-agent serve``: the daemon, set up by ``VM_AGENT_*`` variables (docs/configuration.md)."""

from __future__ import annotations

import argparse
import sys

import anyio

from vm_agent.runtime.settings import SettingsError, load_settings

EXIT_CONFIG = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Everything comes from the environment and VM_AGENT_ENV_FILE, as systemd gives it.
    p.epilog = "Configured by VM_AGENT_* variables and the file VM_AGENT_ENV_FILE names."


def run(_args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"vm-agent: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    # Imported here: the daemon's modules are heavy and a bad setting should fail fast.
    from vm_agent.daemon.run import run_daemon

    return anyio.run(run_daemon, settings)
