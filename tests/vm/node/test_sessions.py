"""Sessions on the real node: a viewer on the host (wss through the forward, verifying the
node's certificate) runs the fake agent; a real claude-agent-acp turn completes against
the scripted Anthropic stand-in on the host; SIGKILL and SIGSTOP of the daemon under
systemd, and what survives them."""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from cryptography import x509
from websockets.asyncio.client import connect

from tests.real_agents.model_api import Reply
from tests.vm.booted import UNIT, VIEWER_PORT, BootedNode, message_text
from tests.vm.figures import FigureBook
from tests.vm.model_host import ModelHost
from tests.vm.node import viewing
from tests.vm.node.conftest import MODEL_KEY

pytestmark = pytest.mark.vm

SESSIONS_CGROUP = f"/sys/fs/cgroup/system.slice/{UNIT}/sessions"


def test_a_viewer_on_the_host_runs_a_fake_agent_prompt(node: BootedNode) -> None:
    async def run() -> tuple[dict[str, object], str, object]:
        async with node.viewer(subject="erin") as viewer:
            tls = viewer.ws.transport.get_extra_info("ssl_object")
            await viewing.start(viewer, "fake", "/srv/workspaces/erin/echo", "s-echo")
            outcome, events = await viewing.prompt(viewer, "s-echo", "p1", "hello from the host")
            return outcome, message_text(events), tls.getpeercert()

    outcome, text, cert = node.plane.run(run)
    assert outcome["outcome"] == "completed", outcome
    assert text == "hello from the host"
    assert ("DNS", node.dns_name) in cert["subjectAltName"]


def test_the_viewer_checks_the_node_certificate(node: BootedNode) -> None:
    tls = node.viewer_tls()

    async def run() -> str:
        token = node.plane.viewer_token(node.node_id, "erin")
        try:
            async with connect(
                node.viewer_url(),
                additional_headers={"Authorization": f"Bearer {token}"},
                ssl=tls,
                server_hostname=f"another-{node.dns_name}",
                proxy=None,
                open_timeout=60,
            ):
                return "connected"
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message

    assert "Hostname mismatch" in node.plane.run(run)


def test_a_real_claude_prompt_completes_in_the_guest(node: BootedNode, model: ModelHost) -> None:
    answer = "Claude in the VM answers through the stand-in."
    model.script.add(Reply(text=answer))
    made = node.plane.make_session(node.node_id, "claude", owner="dana")

    async def run() -> tuple[dict[str, object], str, dict[str, object]]:
        async with node.viewer(subject="dana") as viewer:
            await viewing.start(viewer, "claude", "/srv/workspaces/dana/claude", made)
            outcome, events = await viewing.prompt(viewer, made, "c1", "Say hello from the VM.")
            # a session the control plane did not make gets no credentials: no agent
            stranger = await viewer.call(
                "session/start",
                {"agent": "claude", "cwd": "/srv/workspaces/dana/other", "session_id": "s-own"},
                timeout=viewing.START_S,
            )
            return outcome, message_text(events), stranger

    outcome, text, stranger = node.plane.run(run)
    assert outcome["outcome"] == "completed", outcome
    assert answer in text
    turns = model.script.turns()
    assert turns, [r.path for r in model.script.requests]
    assert turns[-1].headers.get("x-api-key") == MODEL_KEY
    assert "Say hello from the VM." in turns[-1].text
    assert stranger["state"] == "error", stranger
    assert "agent credentials unavailable" in str(stranger["error"]), stranger


def agent_pids(node: BootedNode) -> list[int]:
    found = node.vm.sh(f"find {SESSIONS_CGROUP} -name cgroup.procs -exec cat {{}} +", check=True)
    return sorted(int(pid) for pid in found.stdout.split())


def alive(node: BootedNode, pids: list[int]) -> list[int]:
    shown = node.vm.run(["ps", "-o", "pid=", "-p", ",".join(map(str, pids))])
    return sorted(int(pid) for pid in shown.stdout.split())


@pytest.mark.parametrize(
    "command",
    [
        ["systemctl", "kill", "-s", "SIGKILL", UNIT],
        # the daemon alone: the unit's KillMode must still take its agents away
        ["systemctl", "kill", "--kill-whom=main", "-s", "SIGKILL", UNIT],
    ],
    ids=["all", "main"],
)
def test_sigkill_restarts_the_daemon_and_the_session_is_recovered(
    node: BootedNode, command: list[str]
) -> None:
    sid = f"s-kill-{command[2].removeprefix('--kill-whom=')}"

    async def before() -> int:
        async with node.viewer(subject="frank") as viewer:
            await viewing.start(viewer, "hostile", f"/srv/workspaces/frank/{sid}", sid)
            [who] = await viewing.attack(viewer, sid, "k1", [{"whoami": True}])
            return int(json.loads(who["detail"])["uid"])

    uid = node.plane.run(before)
    pids = agent_pids(node)
    assert pids, "no agent process to outlive the daemon"
    old_main, restarts = node.main_pid(), int(node.unit("NRestarts")["NRestarts"])
    ready_before = node.ready_at() or 0.0
    node.vm.run(command, check=True)
    node.wait_ready(after=ready_before)
    assert node.main_pid() != old_main
    assert int(node.unit("NRestarts")["NRestarts"]) == restarts + 1
    assert alive(node, pids) == [], "old agents outlived the daemon"
    leftover = node.vm.sh(f"find {SESSIONS_CGROUP} -mindepth 1 -type d", check=True).stdout
    assert leftover == "", f"session cgroups left behind:\n{leftover}"

    async def after() -> tuple[dict[str, object], int]:
        async with node.viewer(subject="frank") as viewer:
            listed = await viewer.call("session/list", {})
            [mine] = [s for s in listed["sessions"] if s["session_id"] == sid]
            recovered = await viewer.call(
                "session/recover", {"session_id": sid}, timeout=viewing.START_S
            )
            assert recovered["state"] == "ready", recovered
            await viewing.follow(viewer, sid, recovered["head_seq"])
            [who] = await viewing.attack(viewer, sid, "k2", [{"whoami": True}])
            await viewer.call("session/stop", {"session_id": sid})
            return mine, int(json.loads(who["detail"])["uid"])

    listed, uid_again = node.plane.run(after)
    assert listed["state"] == "stopped", listed
    assert uid_again == uid  # the owner keeps its user, and so its HOME for session/load


def test_a_stopped_daemon_is_restarted_by_the_watchdog(
    node: BootedNode, vm_figures: FigureBook
) -> None:
    watchdog = node.unit("WatchdogUSec")["WatchdogUSec"]
    old_main, ready_before, since = node.main_pid(), node.ready_at() or 0.0, node.guest_now()
    stopped_at = time.monotonic()
    node.vm.run(["kill", "-STOP", str(old_main)], check=True)
    node.wait_ready(after=ready_before, timeout=600)
    vm_figures.add(
        "node",
        f"SIGSTOP to ready again (WatchdogSec={watchdog})",
        time.monotonic() - stopped_at,
        "s",
    )
    journal = node.journal(since=since)
    assert f"Watchdog timeout (limit {watchdog})" in journal, journal
    assert "Failed with result 'watchdog'" in journal, journal
    assert node.main_pid() != old_main
    assert node.unit("ActiveState")["ActiveState"] == "active"


def test_the_certificate_was_renewed_under_systemd(node: BootedNode) -> None:
    """The host's control plane signs for NODE_CERT_TTL_S: by now (or within minutes) the
    daemon has renewed its certificate, written it where the unit may write, and serves it."""
    deadline = time.monotonic() + 600
    while "TLS certificate renewed" not in node.journal(lines=2000):
        assert time.monotonic() < deadline, node.journal()
        node.vm.run(["sleep", "10"], timeout=60)
    cert_file = "/etc/vm-agent/node-cert.pem"
    assert node.vm.run(["stat", "-c", "%a %U", cert_file], check=True).stdout.split() == [
        "644",
        "root",
    ]
    port = node.vm.host_port(VIEWER_PORT)
    context = node.viewer_tls()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as raw,
        context.wrap_socket(raw, server_hostname=node.dns_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    served = x509.load_der_x509_certificate(der)
    in_file = x509.load_pem_x509_certificate(node.vm.read_text(cert_file).encode())
    recorded = node.plane.provisioning(node.node_id)["cert_serial"]
    assert served.serial_number == in_file.serial_number
    assert format(served.serial_number, "x") == recorded
