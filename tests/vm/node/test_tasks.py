"""A task submitted to the control plane runs on the booted node, as a user would run it:
the host's control plane places it on the node, its dispatcher reaches the node's daemon
over TLS (node CA, the node's name, the certificate on record), starts a session it made,
sends the prompt, and the real claude-agent-acp turn (against the scripted Anthropic
stand-in on the host) ends the task `completed` with its events read back."""

from __future__ import annotations

import time

import pytest

from tests.real_agents.model_api import Reply
from tests.vm.booted import BootedNode, message_text
from tests.vm.model_host import ModelHost

pytestmark = pytest.mark.vm

ENDS = ("completed", "failed", "crashed", "cancelled", "timed_out", "auth_required")
TASK_S = 600.0  # a real agent's first turn under emulation: minutes, not seconds


def test_a_task_runs_claude_on_the_node_through_the_dispatcher(
    node: BootedNode, model: ModelHost
) -> None:
    answer = "A task in the VM answers through the stand-in."
    model.script.add(Reply(text=answer))
    plane = node.plane
    # no address PUT: the dispatcher reaches the node where the qemu driver said (its
    # viewer port's forward; the node's own name is checked on its certificate)
    user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('tess')}"}
    body = {
        "taskId": "vm-task-1",
        "agent": "claude",
        "prompt": "Say hello from a task.",
        # the warm node is small (2 vCPU, 4 GiB): the platform's default would ask for another
        "requirements": {"minVcpu": 0.5, "minMemoryGb": 0.5, "minDiskGb": 1},
    }
    submitted = plane.http.post("/api/tasks", json=body, headers=user)
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["nodeId"] == node.node_id, submitted.json()
    deadline = time.monotonic() + TASK_S
    task = plane.http.get("/api/tasks/vm-task-1", headers=user).json()
    while task["status"] not in ENDS and time.monotonic() < deadline:
        time.sleep(1)
        task = plane.http.get("/api/tasks/vm-task-1", headers=user).json()
    if task["status"] != "completed":
        why = {k: task.get(k) for k in ("status", "reason", "outcome", "transitions")}
        pytest.fail(f"task: {why}\nnode journal:\n{node.journal(lines=80)}")
    turns = model.script.turns()
    assert turns and "Say hello from a task." in turns[-1].text
    # the task's events, from the control plane (what the node's outbox delivered)
    deadline = time.monotonic() + 120
    text = ""
    while answer not in text and time.monotonic() < deadline:
        events = plane.http.get("/api/tasks/vm-task-1/events", headers=user).json()["events"]
        text = message_text(events)
        time.sleep(1)
    assert answer in text
