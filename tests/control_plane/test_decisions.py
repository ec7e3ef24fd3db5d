"""The control plane's pure decisions, with tables: who may change a layer, who may have
an agent's credentials, who may make a session."""

from __future__ import annotations

import pytest

from control_plane.demand.reservations import LayerKind
from control_plane.dispatch.sessions import (
    AgentSession,
    WorkspaceFacts,
    creation_refusal,
    credentials_refusal,
)
from control_plane.storage.layers import change_refusal

P, U, A, T, F = (
    LayerKind.PROJECT,
    LayerKind.USER,
    LayerKind.AGENT_PROFILE,
    LayerKind.TRIGGER,
    LayerKind.PLATFORM,
)


# kind, layer id, its owner, who asks, an admin?, the refusal (None: allowed)
LAYER_CHANGES: list[tuple[LayerKind, str, str | None, str, bool, str | None]] = [
    (F, "platform", "platform", "alice", False, "only an admin"),
    (F, "platform", "platform", "root", True, None),
    (U, "alice", None, "alice", False, None),
    (U, "alice", "alice", "alice", False, None),
    (U, "bob", None, "alice", False, "that user's"),
    (U, "bob", "bob", "ops", True, None),
    (P, "p", None, "alice", False, None),  # no owner named: alice's own `p`
    (P, "p", "alice", "alice", False, None),
    (P, "p", "bob", "alice", False, "under their own name only"),
    (A, "a", "bob", "alice", False, "under their own name only"),
    (T, "t", "bob", "alice", False, "under their own name only"),
    (T, "t", "bob", "ops", True, None),
]


@pytest.mark.parametrize("case", LAYER_CHANGES)
def test_who_may_change_a_layer(
    case: tuple[LayerKind, str, str | None, str, bool, str | None],
) -> None:
    kind, layer_id, owner, actor, admin, refused = case
    why = change_refusal(kind, layer_id, owner, actor, admin)
    assert (why is None) == (refused is None)
    if refused is not None:
        assert why is not None and refused in why


def session(node: str = "n1", agent: str = "claude", ended: float | None = None) -> AgentSession:
    return AgentSession("s-1", node, agent, "alice", "ws-1", "alice", 1.0, ended)


@pytest.mark.parametrize(
    ("known", "node", "agent", "status", "phrase"),
    [
        (None, "n1", "claude", 404, "made no session"),
        (session(), "n2", "claude", 403, "runs on another node"),
        (session(), "n1", "codex", 403, "runs agent 'claude', not 'codex'"),
        (session(ended=5.0), "n1", "claude", 403, "has ended"),
        # Another node asking for another agent: the node is what it hears about first.
        (session(), "n2", "codex", 403, "another node"),
        (session(), "n1", "claude", None, None),
    ],
)
def test_who_may_have_an_agents_credentials(
    known: AgentSession | None, node: str, agent: str, status: int | None, phrase: str | None
) -> None:
    refusal = credentials_refusal(known, "s-1", node, agent)
    if status is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.status == status
        assert phrase is not None and phrase in refusal.message


WS = WorkspaceFacts("ws-1", "alice", "n1", True)


# who asks, an admin?, node, is it known?, workspace id given, the workspace, refusal
SESSION_MAKING: list[
    tuple[str, bool, str, bool, str | None, WorkspaceFacts | None, int | None, str | None]
] = [
    ("alice", False, "n1", True, "ws-1", WS, None, None),
    ("alice", False, "n1", True, None, None, 422, "workspaceId is required"),
    # Another user's workspace: the same answer as one that does not exist.
    ("bob", False, "n1", True, "ws-1", WS, 404, "no such workspace 'ws-1'"),
    (
        "bob",
        False,
        "n2",
        True,
        "ws-1",
        WorkspaceFacts("ws-1", "alice", "n1", False),
        404,
        "no such workspace 'ws-1'",
    ),
    ("alice", False, "n1", True, "ws-9", None, 404, "no such workspace"),
    ("alice", False, "n2", True, "ws-1", WS, 422, "runs on node 'n1', not 'n2'"),
    (
        "alice",
        False,
        "n1",
        True,
        "ws-1",
        WorkspaceFacts("ws-1", "alice", "n1", False),
        409,
        "released",
    ),
    ("ops", True, "n1", True, "ws-1", WS, None, None),
    ("ops", True, "n1", True, None, None, None, None),
    ("ops", True, "n9", False, None, None, 404, "no such node"),
    ("ops", True, "n2", True, "ws-1", WS, 422, "runs on node"),
]


@pytest.mark.parametrize("case", SESSION_MAKING)
def test_who_may_make_a_session(
    case: tuple[str, bool, str, bool, str | None, WorkspaceFacts | None, int | None, str | None],
) -> None:
    actor, admin, node, known, ws_id, ws, status, phrase = case
    refusal = creation_refusal(
        actor=actor, admin=admin, node_id=node, node_known=known, workspace_id=ws_id, workspace=ws
    )
    if status is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.status == status
        assert phrase is not None and phrase in refusal.message
