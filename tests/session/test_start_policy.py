"""The start policy's decisions, as tables: caps, reservation bounds, whose session it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vm_agent.containment.host import machine_memory_mb
from vm_agent.core.vocabulary import SessionState
from vm_agent.daemon.assembly import start_policy
from vm_agent.runtime.settings import Settings, SettingsError, load_settings
from vm_agent.session.start_gate import StartGate
from vm_agent.session.start_policy import (
    AcpRecord,
    CapReached,
    NotYours,
    Recorded,
    StartInvalid,
    StartPolicy,
    cap_refusal,
    effective_reservation,
    load_refusal,
    owner_from_record,
)

POLICY = StartPolicy(
    max_sessions=4, max_sessions_per_owner=2, max_memory_mb=8192, max_cpu_millis=4000
)


@pytest.mark.parametrize(
    ("live", "owner", "node_scope", "refused"),
    [
        ([], "alice", False, None),
        (["alice"], "alice", False, None),
        (["alice", "alice"], "alice", False, "MAX_SESSIONS_PER_OWNER=2"),
        (["alice", "alice"], "bob", False, None),
        # The control plane is held to the node's cap only, also for a user it names.
        (["alice", "alice"], "alice", True, None),
        ([None, None, None], None, True, None),
        (["a", "b", "c", "d"], None, True, "MAX_SESSIONS=4"),
        (["a", "b", "c", "d"], "e", False, "MAX_SESSIONS=4"),
    ],
)
def test_caps(
    live: list[str | None], owner: str | None, node_scope: bool, refused: str | None
) -> None:
    why = cap_refusal(POLICY, live_owners=live, owner=owner, node_scope=node_scope)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why and "session cap reached" in why


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"memoryMb": 1e12, "cpuMillis": 1e9}, "memoryMb 1000000000000 is over this node's cap"),
        ({"memoryMb": 8193}, "over this node's cap of 8192"),
        ({"cpuMillis": 4001}, "cpuMillis 4001 is over this node's cap of 4000"),
        ({"memoryMb": float("inf")}, "must be finite"),
        ({"memoryMb": float("nan")}, "must be finite"),
        ({"memoryMb": -5}, "must be positive"),
        ({"memoryMb": 0}, "must be positive"),
        ({"memoryMb": 1.5}, "whole number"),
        ({"memoryMb": True}, "must be a number"),
        ({"memoryMb": "512"}, "must be a number"),
        ({"memoryMb": 10**400}, "over this node's cap"),
        ({"other": float("inf")}, "NaN, Infinity"),
        ({"pad": "x" * 9000}, "larger than 8192 bytes"),
        ('{"memoryMb": 1e12}', "over this node's cap"),  # JSON text counts as its object
    ],
)
def test_reservations_refused(asked: Any, message: str) -> None:
    with pytest.raises(StartInvalid, match="reservation") as err:
        effective_reservation(asked, None, POLICY)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "asked",
    [None, "res-123", {"memoryMb": 8192, "cpuMillis": 4000}, {"memoryMb": 512}, {}],
)
def test_reservations_within_the_caps_pass(asked: Any) -> None:
    assert effective_reservation(asked, None, POLICY) == asked


def _recorded(reservation: dict[str, Any] | None, **kw: Any) -> Recorded:
    fields: dict[str, Any] = dict(
        session_id="s-cp", agent="echo", owner="alice", reservation=reservation, ended=False
    )
    fields.update(kw)
    return Recorded(**fields)


RECORDED = {"memoryMb": 2048, "cpuMillis": 1000, "diskMb": 10_000, "exclusiveNode": False}


@pytest.mark.parametrize(
    ("asked", "effective"),
    [
        (None, RECORDED),  # the control plane's, whatever the viewer says
        ("an-id", RECORDED),
        ({"memoryMb": 1024}, {**RECORDED, "memoryMb": 1024}),  # lower: honoured
        ({"cpuMillis": 1000}, RECORDED),
    ],
)
def test_a_control_plane_session_runs_under_its_recorded_reservation(
    asked: Any, effective: dict[str, Any]
) -> None:
    assert effective_reservation(asked, _recorded(RECORDED), POLICY) == effective


@pytest.mark.parametrize("asked", [{"memoryMb": 4096}, {"cpuMillis": 1001}])
def test_a_viewer_cannot_raise_a_recorded_reservation(asked: dict[str, Any]) -> None:
    with pytest.raises(StartInvalid, match="more than the control plane recorded"):
        effective_reservation(asked, _recorded(RECORDED), POLICY)


def test_a_recorded_reservation_is_still_held_to_the_node_caps() -> None:
    with pytest.raises(StartInvalid, match="over this node's cap"):
        effective_reservation(None, _recorded({"memoryMb": 10**6}), POLICY)


@pytest.mark.parametrize(
    ("recorded", "agent", "owner", "node_scope", "outcome"),
    [
        (_recorded(None), "echo", "alice", False, "alice"),
        (_recorded(None), "echo", "bob", False, "another user"),
        (_recorded(None), "echo", None, True, "alice"),  # the node scope takes the record's
        (_recorded(None), "echo", "alice", True, "alice"),
        (_recorded(None), "echo", "bob", True, "another user"),
        (_recorded(None), "other", "alice", False, "for agent 'echo'"),
        (_recorded(None, ended=True), "echo", "alice", False, "ended"),
    ],
)
def test_owner_from_record(
    recorded: Recorded, agent: str, owner: str | None, node_scope: bool, outcome: str
) -> None:
    if outcome == "alice":
        assert (
            owner_from_record(recorded, agent=agent, owner=owner, node_scope=node_scope) == "alice"
        )
    else:
        with pytest.raises(NotYours, match="forbidden") as err:
            owner_from_record(recorded, agent=agent, owner=owner, node_scope=node_scope)
        assert outcome in str(err.value)


KNOWN = [
    AcpRecord("acp-alice", "echo", "alice"),
    AcpRecord("acp-alice", "echo", "alice"),  # a recovery, or a second session loading it
    AcpRecord("acp-bob", "echo", "bob"),
    AcpRecord("acp-node", "echo", None),
    AcpRecord(None, "echo", "carol"),
]


@pytest.mark.parametrize(
    ("acp", "agent", "owner", "refused"),
    [
        ("acp-alice", "echo", "alice", None),
        ("acp-alice", "echo", "bob", "belongs to another user"),
        ("acp-bob", "echo", "alice", "belongs to another user"),
        ("acp-alice", "other", "alice", "another agent"),
        ("acp-node", "echo", None, None),
        ("acp-node", "echo", "alice", "belongs to another user"),
        ("acp-unknown", "echo", "alice", "no session of yours"),
    ],
)
def test_load_refusal(acp: str, agent: str, owner: str | None, refused: str | None) -> None:
    why = load_refusal(acp, agent=agent, owner=owner, known=KNOWN)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_the_daemons_policy_comes_from_its_settings_and_the_machine(tmp_path: Path) -> None:
    set_ = Settings(
        dev_mode=True,
        max_sessions=3,
        max_sessions_per_owner=1,
        session_max_memory_mb=100,
    )
    policy = start_policy(set_)
    assert (policy.max_sessions, policy.max_sessions_per_owner) == (3, 1)
    assert (policy.max_memory_mb, policy.max_cpu_millis) == (100, (os.cpu_count() or 1) * 1000)
    machine = start_policy(Settings(dev_mode=True))
    assert (machine.max_sessions, machine.max_sessions_per_owner) == (64, 16)
    assert machine.max_memory_mb == machine_memory_mb()
    # A cap of zero is a mistake, said at start with the variable's name.
    env = {"VM_AGENT_DEV_MODE": "1", "VM_AGENT_ENV_FILE": str(tmp_path / "none")}
    for name in ("MAX_SESSIONS", "MAX_SESSIONS_PER_OWNER", "SESSION_MAX_MEMORY_MB"):
        with pytest.raises(SettingsError, match=f"VM_AGENT_{name}"):
            load_settings({**env, f"VM_AGENT_{name}": "0"})


def test_the_gate_counts_starting_sessions_and_a_recovery_once() -> None:
    gate = StartGate(StartPolicy(max_sessions=10, max_sessions_per_owner=2))
    recovering = [("a", SessionState.RECOVERING, "alice"), ("z", SessionState.STOPPED, "alice")]
    with gate.claim("a", "alice"):  # a recovery: claimed, and already recovering
        gate.check_cap(recovering, "alice", node_scope=False)  # one live session, not two
        with gate.claim("b", "alice"):  # a start under way
            assert gate.claimed("b")
            with pytest.raises(CapReached, match="MAX_SESSIONS_PER_OWNER=2"):
                gate.check_cap(recovering, "alice", node_scope=False)
            gate.check_cap(recovering, "alice", node_scope=True)
    assert not gate.claimed("a") and not gate.claimed("b")
