"""What a ``session/start`` may ask of this node (pure: facts in, a decision out).

- **Caps**: live sessions on the node, and per owner (the node scope, the control plane,
  is held to the node's cap only).
- **Reservations**: ``memoryMb`` and ``cpuMillis`` are whole, positive, finite and at most
  the node's per-session caps; for a session the control plane made, at most what it
  recorded (a viewer may lower its limits, never raise them).
- **Whose session**: a session id the control plane made belongs to the owner it recorded;
  an ACP session may be loaded only by a session of the owner (and agent) that made it.

Each refusal is an exception whose message is for a person: ``StartInvalid`` (bad params,
JSON-RPC -32602), ``CapReached`` (-32001), ``NotYours`` (-32003).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vm_agent.containment.limits import reservation_mapping

# Bounds that hold even when the machine's size is unknown (no /proc/meminfo).
_ABSOLUTE_MAX = {"memoryMb": 2**32, "cpuMillis": 2**20 * 1000}
LIMIT_FIELDS = ("memoryMb", "cpuMillis")
MAX_RESERVATION_BYTES = 8192


class StartInvalid(ValueError):
    """The start's parameters are refused (JSON-RPC invalid params)."""


class CapReached(Exception):
    """A cap on sessions is reached; the message names it."""


class NotYours(Exception):
    """The start names something that belongs to another user."""


@dataclass(frozen=True, slots=True)
class StartPolicy:
    """The node's policy (``from_settings`` in the daemon; tests give their own)."""

    max_sessions: int = 64
    max_sessions_per_owner: int = 16
    max_memory_mb: int | None = None  # per session; None: only the absolute bound
    max_cpu_millis: int | None = None

    def cap_of(self, field: str) -> int:
        mine = self.max_memory_mb if field == "memoryMb" else self.max_cpu_millis
        return min(_ABSOLUTE_MAX[field], mine) if mine is not None else _ABSOLUTE_MAX[field]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the control plane recorded for a session id it made."""

    session_id: str
    agent: str
    owner: str
    reservation: Mapping[str, Any] | None
    ended: bool


# (session id, agent) -> what the control plane recorded, or None when it made no such
# session; raises when it cannot be asked.
SessionDetailsProvider = Callable[[str, str], Awaitable[Recorded | None]]


@dataclass(frozen=True, slots=True)
class AcpRecord:
    """A session the registry knows: which ACP session it had, for whom, with which agent."""

    acp_session_id: str | None
    agent: str
    owner: str | None


def cap_refusal(
    policy: StartPolicy,
    *,
    live_owners: Iterable[str | None],
    owner: str | None,
    node_scope: bool,
) -> str | None:
    """Why one more live session is refused (``live_owners``: the owner of each live or
    starting session); None when it may start."""
    owners = list(live_owners)
    if len(owners) >= policy.max_sessions:
        return (
            f"session cap reached: this node runs {len(owners)} sessions "
            f"(VM_AGENT_MAX_SESSIONS={policy.max_sessions}); stop one first"
        )
    if node_scope or owner is None:
        return None
    mine = sum(1 for o in owners if o == owner)
    if mine >= policy.max_sessions_per_owner:
        return (
            f"session cap reached: {owner} runs {mine} sessions on this node "
            f"(VM_AGENT_MAX_SESSIONS_PER_OWNER={policy.max_sessions_per_owner}); stop one first"
        )
    return None


def _whole(field: str, value: Any, cap: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StartInvalid(f"reservation {field} must be a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise StartInvalid(f"reservation {field} must be finite, not {value!r}")
    if value != int(value):
        raise StartInvalid(f"reservation {field} must be a whole number, not {value!r}")
    if value <= 0:
        raise StartInvalid(f"reservation {field} must be positive, not {value!r}")
    if value > cap:
        raise StartInvalid(f"reservation {field} {int(value)} is over this node's cap of {cap}")
    return int(value)


def checked_limits(reservation: Mapping[str, Any], policy: StartPolicy) -> dict[str, int]:
    """The reservation's limit fields, each checked (raises ``StartInvalid``)."""
    out: dict[str, int] = {}
    for field in LIMIT_FIELDS:
        value = reservation.get(field)
        if value is not None:
            out[field] = _whole(field, value, policy.cap_of(field))
    return out


def effective_reservation(
    asked: str | Mapping[str, Any] | None,
    recorded: Recorded | None,
    policy: StartPolicy,
) -> str | dict[str, Any] | None:
    """The reservation the session runs under: the viewer's, bounded by the node's caps,
    or for a control-plane session the recorded one with the viewer's lower limits.

    Raises ``StartInvalid`` for a malformed reservation, one over a cap, or one that
    asks more than the control plane recorded.
    """
    if isinstance(asked, str) and len(asked) > MAX_RESERVATION_BYTES:
        raise StartInvalid(f"reservation is longer than {MAX_RESERVATION_BYTES} characters")
    asked_map = reservation_mapping(asked)  # JSON text counts as the object it holds
    mine = checked_limits(asked_map, policy)
    if isinstance(asked, Mapping):  # kept and shown as it is: JSON must carry all of it
        try:
            text = json.dumps(asked, allow_nan=False)
        except (ValueError, TypeError):
            raise StartInvalid(
                "reservation holds a value JSON cannot carry (NaN, Infinity)"
            ) from None
        if len(text) > MAX_RESERVATION_BYTES:
            raise StartInvalid(f"reservation is larger than {MAX_RESERVATION_BYTES} bytes")
    if recorded is None or recorded.reservation is None:
        return None if asked is None else (dict(asked) if isinstance(asked, Mapping) else asked)
    theirs = checked_limits(recorded.reservation, policy)
    out = dict(recorded.reservation)
    for field, value in mine.items():
        allowed = theirs.get(field)
        if allowed is not None and value > allowed:
            raise StartInvalid(
                f"reservation {field} {value} is more than the control plane recorded for "
                f"session {recorded.session_id!r} ({allowed})"
            )
        out[field] = value
    return out


def owner_from_record(
    recorded: Recorded, *, agent: str, owner: str | None, node_scope: bool
) -> str:
    """The owner of a session the control plane made, checked against who starts it.

    ``owner``: the token's subject, or (node scope) the owner it named, if any. Raises
    ``NotYours`` for another user's session, an ended one, or one made for another agent.
    """
    sid = recorded.session_id
    if recorded.ended:
        raise NotYours(f"forbidden: the control plane ended session {sid!r}")
    if recorded.agent != agent:
        raise NotYours(
            f"forbidden: the control plane made session {sid!r} for agent "
            f"{recorded.agent!r}, not {agent!r}"
        )
    if owner is not None and owner != recorded.owner:
        raise NotYours(f"forbidden: session {sid!r} was made for another user")
    if owner is None and not node_scope:
        raise NotYours(f"forbidden: session {sid!r} was made for another user")
    return recorded.owner


def load_refusal(
    acp_session_id: str, *, agent: str, owner: str | None, known: Iterable[AcpRecord]
) -> str | None:
    """Why a start may not load ``acp_session_id``; None when every session of the
    registry that had it belonged to ``owner`` and ran ``agent`` (and there is one)."""
    had = [r for r in known if r.acp_session_id == acp_session_id]
    if not had:
        return f"forbidden: no session of yours had ACP session {acp_session_id!r}"
    if any(r.owner != owner for r in had):
        return f"forbidden: ACP session {acp_session_id!r} belongs to another user"
    if any(r.agent != agent for r in had):
        return f"forbidden: ACP session {acp_session_id!r} was made by another agent"
    return None
