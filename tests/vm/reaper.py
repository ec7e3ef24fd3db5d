"""Runs qemu and takes it down with the test process, however that ends.

`python reaper.py QEMU ARGV...` is started as the leader of a new process group with its
stdin a pipe from the test process. qemu (and the socat that each guest forward starts)
stay in that group. When the pipe reaches end of file (the test closed it, or died even by
SIGKILL, which no fixture teardown survives) or the reaper is told to stop, the whole group
is killed. Standard library only: it starts before anything else of the test suite loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType


def _kill_group(*_: int | FrameType | None) -> None:
    os.killpg(0, signal.SIGKILL)


def main() -> int:
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, _kill_group)
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)

    def watch_parent() -> None:
        # the raw descriptor: a daemon thread inside sys.stdin's buffer aborts shutdown
        while os.read(0, 4096):
            pass
        _kill_group()

    threading.Thread(target=watch_parent, daemon=True).start()
    return child.wait()


if __name__ == "__main__":
    code = main()
    os._exit(code if code >= 0 else 128 - code)
