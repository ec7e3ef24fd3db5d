"""FAULT INJECTION for the node lifecycle's provider steps (tests/providers/test_node_faults.py).

A replica whose ``CONTROL_PLANE_NODES_KILL_AT`` names a point SIGKILLs itself there, holding
its lease, as a crash would: the point between two provider steps the ownership rules
must survive. Unset (the default, and always in production) it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Literal, get_args

log = logging.getLogger("control_plane.nodes")

# After the row says CREATING, before the create is sent; after the create answered,
# before its VM is recorded; after DELETING is recorded, before the delete is sent; after
# the delete answered, before it is confirmed; in the sweep, after listing (before any
# delete) and after an orphan's delete.
FaultPoint = Literal[
    "create_recorded",
    "create_sent",
    "delete_recorded",
    "delete_sent",
    "sweep_listed",
    "sweep_deleted",
]
POINTS: frozenset[str] = frozenset(get_args(FaultPoint))


def fault(kill_at: str | None, point: FaultPoint) -> None:
    if kill_at is not None and kill_at == point:
        log.error("fault injection: killed at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
