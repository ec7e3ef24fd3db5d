"""The daemon's file-descriptor budget: every viewer connection is a descriptor, every agent
several (its pipes), and the event log a few. The unit sets ``LimitNOFILE``; the daemon also
raises its soft limit toward the hard one at start, and says so when even that is short of
the connection cap plus a reserve, since then descriptors, not the cap, run out first."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# For agents' pipes and terminals, the event log, the control plane link, the JWKS fetch.
RESERVE = 512


def planned_soft_limit(soft: int, hard: int, max_connections: int) -> tuple[int, str | None]:
    """The soft limit to set, and a warning when it still falls short (pure)."""
    need = max_connections + RESERVE
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= need:
        return soft, None
    target = need if hard == unlimited else min(hard, need)
    if target < need:
        return target, (
            f"RLIMIT_NOFILE allows {target} file descriptors, fewer than "
            f"VM_AGENT_MAX_CONNECTIONS ({max_connections}) + {RESERVE} for agents and the log: "
            f"raise LimitNOFILE or lower the cap"
        )
    return target, None


def raise_soft_limit(max_connections: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target, warning = planned_soft_limit(soft, hard, max_connections)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise RLIMIT_NOFILE from %d to %d: %s", soft, target, exc)
            return
        log.info("RLIMIT_NOFILE raised from %d to %d", soft, target)
    if warning is not None:
        log.warning("%s", warning)
