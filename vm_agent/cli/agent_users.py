"""``vm-agent agent-users ensure``: create the agent-user pool's missing groups, users, homes.

cloud-init runs it after installing vm-agent and before starting the unit (inside the unit
/etc is read-only); `vm-agent dev` as root does the same itself. Idempotent. ``--check``
only says what it would do (exit 1 when something is missing or in the way).
"""

from __future__ import annotations

import argparse
import os
import sys

from vm_agent.runtime.settings import SettingsError, load_pool_settings

EXIT_OK, EXIT_TODO, EXIT_CONFIG = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    ensure = sub.add_parser("ensure", help="create what is missing (as root)")
    ensure.add_argument("--check", action="store_true", help="only report; change nothing")
    p.epilog = (
        "The pool: VM_AGENT_AGENT_USERS users {VM_AGENT_AGENT_USER_PREFIX}{i}, uid = gid = "
        "VM_AGENT_AGENT_UID_BASE + i, home VM_AGENT_AGENT_HOMES_DIR/<name> (0700)."
    )


def run(args: argparse.Namespace) -> int:
    from vm_agent.containment.accounts import describe
    from vm_agent.containment.ensure import EnsureError, ensure_pool, plan_for
    from vm_agent.daemon.assembly import pool_spec

    try:
        pool = pool_spec(load_pool_settings())
    except SettingsError as exc:
        print(f"vm-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    last = pool.uid_base + pool.count - 1
    names = f"{pool.prefix}0..{pool.count - 1}"
    what = f"{pool.count} agent users {names} (uid {pool.uid_base}..{last})"
    if args.check:
        plan = plan_for(pool)
        for line in plan.conflicts:
            print(f"conflict: {line}")
        for action in plan.actions:
            print(f"to do: {describe(action)}")
        if plan.done:
            print(f"{what}: all there")
        return EXIT_OK if plan.done else EXIT_TODO
    if os.geteuid() != 0:
        print("vm-agent agent-users ensure: must run as root", file=sys.stderr)
        return EXIT_CONFIG
    try:
        plan = ensure_pool(pool, say=print)
    except EnsureError as exc:
        print(f"vm-agent agent-users ensure: {exc}", file=sys.stderr)
        return EXIT_TODO
    print(f"{what}: {'created what was missing' if plan.actions else 'all there already'}")
    return EXIT_OK
