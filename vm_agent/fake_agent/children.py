"""The `spawns-children` scenario's start-up: grandchildren that ignore SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from vm_agent.fake_agent.wire import log

# Bounded so that a test that forgets to clean up does not leave them forever.
GRANDCHILD_SECONDS = 600
_GRANDCHILD = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    f"time.sleep({GRANDCHILD_SECONDS})\n"
)


def spawn_children(count: int, pid_file: str | None) -> list[int]:
    """Ignore SIGTERM, then start `count` grandchildren in our own process group.

    SIGTERM is ignored before spawning: an ignored disposition survives exec,
    so a grandchild ignores SIGTERM from its first instruction (no start-up race).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pids = []
    for _ in range(count):
        child = subprocess.Popen(
            [sys.executable, "-c", _GRANDCHILD],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pids.append(child.pid)
        log(f"fake-agent: spawned grandchild pid {child.pid}")
    if pid_file:
        tmp = f"{pid_file}.tmp"
        with open(tmp, "w", encoding="ascii") as handle:
            handle.writelines(f"{pid}\n" for pid in pids)
        os.replace(tmp, pid_file)  # readers never see a half-written list
    return pids
