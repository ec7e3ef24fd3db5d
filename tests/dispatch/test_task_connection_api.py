"""`POST /api/tasks/{id}/connection` without a node: who is refused and why (the decision
as a table, the API's 401/403/404/409 on SQLite and PostgreSQL). The answer itself, used
by the gateway against a real daemon, is in test_task_connection.py."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.api.task_connection import Refusal, connection_refusal
from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import running

pytestmark = [pytest.mark.anyio]


def _view(status: str, *seen: str, node: str | None = "n1", session: str | None = "s-1") -> Any:
    return {
        "status": status,
        "nodeId": node,
        "sessionId": session,
        "transitions": [{"status": s} for s in (*seen, status)],
    }


@pytest.mark.parametrize(
    ("view", "address_known", "refused"),
    [
        (_view("queued", node=None, session=None), True, "no session yet (status queued)"),
        (_view("waiting_for_node", "queued"), True, "no session yet (status waiting_for_node)"),
        (_view("starting", "queued", "waiting_for_node"), True, "no session yet"),
        (_view("cancelled", "queued", "waiting_for_node"), True, "ended (cancelled) without"),
        (_view("failed", "starting"), True, "ended (failed) without a session"),
        (_view("running", "starting"), False, "address of node n1 is not known yet"),
        (_view("running", "starting"), True, None),
        (_view("awaiting_follow_up", "running"), True, None),
        # ended after its session ran: the daemon still has the session (and its log)
        (_view("completed", "starting", "running"), True, None),
        (_view("crashed", "running"), True, None),
    ],
)
def test_when_a_task_s_session_can_be_reached(
    view: Any, address_known: bool, refused: str | None
) -> None:
    found = connection_refusal(view, address_known)
    if refused is None:
        assert found is None
    else:
        assert isinstance(found, Refusal) and found.status == 409
        assert refused in found.message


@pytest.mark.integration
async def test_only_the_owner_of_a_task_with_a_session_gets_a_connection(
    settings: ControlPlaneSettings,
) -> None:
    async with running(settings) as cp:
        await cp.ready("n1")  # a node that reported, but has no daemon: the task waits
        r = await cp.client.post(
            "/api/tasks", json={"agent": "fake", "prompt": "hi", "taskId": "t1"},
            headers=cp.user("alice"),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        url = "/api/tasks/t1/connection"
        r = await cp.client.post(url, headers=cp.user("alice"))
        assert r.status_code == 409, r.text
        assert "no session yet (status waiting_for_node)" in r.json()["error"]
        assert r.json()["taskStatus"] == "waiting_for_node"
        # Not alice's: the same 404 as for no task at all (nothing says it exists).
        for headers, path in [
            (cp.user("bob"), url),
            (cp.user("alice"), "/api/tasks/nope/connection"),
            # An admin gets no token to act as alice: the owner's own ids only.
            (cp.admin(), url + "?owner=alice"),
        ]:
            r = await cp.client.post(path, headers=headers)
            assert (r.status_code, r.json()) == (404, {"error": "no such task"}), path
        r = await cp.client.post(url, headers=cp.callback("n1"))
        assert r.status_code == 403
        viewer = cp.plane.tokens.mint_viewer_token("n1", ["read", "write"], subject="alice")
        r = await cp.client.post(url, headers=cp.bearer(viewer))
        assert r.status_code == 403
        r = await cp.client.post(url)
        assert r.status_code == 401
        r = await cp.client.get(url, headers=cp.user("alice"))
        assert r.status_code == 405
        r = await cp.client.post("/api/tasks/t1/cancel", headers=cp.user("alice"))
        assert r.status_code == 202, r.text
        r = await cp.client.post(url, headers=cp.user("alice"))
        assert r.status_code == 409
        assert "ended (cancelled) without a session on a node" in r.json()["error"]
