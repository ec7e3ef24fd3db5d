"""One node for the package: the control plane makes it (`POST /api/nodes`), its user-data
boots a Debian VM unchanged, and the checks of tests/vm/node/ run against it.

The boot's figures (to ready from qemu's and cloud-init's start, each install step) are
recorded here, whatever tests run. After `ready` the fixture adds two agents to the VM's
catalog (the hostile fake agent the containment checks drive, and the fake agent that
commits for the repository check) and restarts the unit once. The guest reaches the
control plane, the model stand-in and the GitHub stand-in through guest forwards.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from tests.vm.booted import UNIT, VIEWER_PORT, BootedNode
from tests.vm.figures import FigureBook
from tests.vm.fixtures import VMLauncher
from tests.vm.github_host import GitHubHost
from tests.vm.model_host import ModelHost, anthropic_stand_in
from tests.vm.plane_host import HostPlane

SWAP_MB = 512
SWAPPINESS = 17
# Node agents (claude-agent-acp starts Claude Code: two Node processes) beside the daemon
MEMORY_MB = 3072
AGENT_START_S = 300.0  # the node's bound on an agent's initialize plus session/new
AGENTS_FILE = "/etc/vm-agent/agents.toml"
HOSTILE_COMMAND = (
    "/opt/vm-agent/bin/vm-agent",
    *("fake-agent", "--scenario", "hostile", "--state-dir", "~/.fake-hostile"),
)
COMMIT_AGENT = "fake-commit"
COMMIT_COMMAND = (
    "/opt/vm-agent/bin/vm-agent",
    *("fake-agent", "--scenario", "commit", "--state-dir", "~/.fake-commit"),
)
MODEL_KEY = "sk-ant-vmtest-" + secrets.token_hex(12)


@pytest.fixture(scope="package")
def model(vm_plane: HostPlane) -> Iterator[ModelHost]:
    with anthropic_stand_in(vm_plane.portal) as host:
        yield host


@pytest.fixture(scope="package")
def node(
    vm_launcher: VMLauncher,
    vm_plane: HostPlane,
    model: ModelHost,
    vm_github: GitHubHost,
    vm_figures: FigureBook,
) -> Iterator[BootedNode]:
    # claude's key and where its provider is, as an operator keeps them: the secret store
    vm_plane.set_agent_secrets(
        {"claude": {"ANTHROPIC_API_KEY": MODEL_KEY, "ANTHROPIC_BASE_URL": model.guest_url}}
    )
    created = vm_plane.create_node(
        node_id=f"vmt-{secrets.token_hex(3)}",
        swap={"size_mb": SWAP_MB, "swappiness": SWAPPINESS},
        # claude's first start in a cold, emulated guest (Node loading its bundle) takes
        # minutes on a loaded host, past the daemon's default 60 s: the node parameter
        agent_start_timeout_s=AGENT_START_S,
    )
    forward, relay = vm_plane.forward()
    with vm_launcher.boot(
        created.user_data,
        label="node",
        hostname=created.answer["hostname"],
        guest_ports=[VIEWER_PORT],
        guest_forwards=[forward, model.forward(), vm_github.forward()],
        memory_mb=MEMORY_MB,
    ) as vm:
        booted = BootedNode(vm, vm_plane, created, relay, "node")
        booted.record_boot(booted.wait_ready(), vm_figures)
        booted.cloud_init = vm.wait_cloud_init()
        entries = [("hostile", HOSTILE_COMMAND), (COMMIT_AGENT, COMMIT_COMMAND)]
        booted.append_text(
            AGENTS_FILE,
            "".join(f"\n[agents.{n}]\ncommand = {json.dumps(list(c))}\n" for n, c in entries),
        )
        booted.restart()
        booted.viewer_tls()
        vm.note(f"{UNIT}: {booted.unit('ActiveState', 'NRestarts')}")
        yield booted
