"""Issue 14's checks in the real VM (ct's table): the hostile fake agent, run by the
daemon under systemd as a pool user in a cgroup of its session, tries what a model-chosen
program might. Memory and CPU limits need the controllers these development machines
lack; the metadata rule is tried only here, inside a guest whose network reaches nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.vm.booted import UNIT, BootedNode
from tests.vm.node import viewing

pytestmark = pytest.mark.vm

UNIT_CGROUP = f"/sys/fs/cgroup/system.slice/{UNIT}"
POOL = range(61000, 61016)
METADATA_V4, METADATA_V6 = "169.254.169.254", "fd00:ec2::254"


def session_cgroup(session_id: str) -> str:
    return f"{UNIT_CGROUP}/sessions/session-{session_id}"


def read(node: BootedNode, path: str) -> str:
    return node.vm.read_text(path)


def test_the_daemon_and_its_sessions_have_their_cgroups(node: BootedNode) -> None:
    pid = node.main_pid()
    assert read(node, f"/proc/{pid}/cgroup").strip() == f"0::/system.slice/{UNIT}/daemon"
    controllers = read(node, f"{UNIT_CGROUP}/sessions/cgroup.subtree_control").split()
    assert set(controllers) >= {"cpu", "memory", "pids"}, controllers
    journal = node.vm.run(["journalctl", "--no-pager", "-o", "cat", "-u", UNIT], timeout=120)
    assert "cannot be enforced" not in journal.stdout


def test_memory_max_is_enforced_and_the_crash_report_says_oom(node: BootedNode) -> None:
    sid = "s-memory"

    async def run() -> tuple[dict[str, Any], str, dict[str, Any]]:
        async with node.viewer(subject="grace") as viewer:
            await viewing.start(
                viewer, "hostile", "/srv/workspaces/grace/mem", sid, reservation={"memoryMb": 256}
            )
            limit = read(node, f"{session_cgroup(sid)}/memory.max").strip()
            text = json.dumps([{"allocate_mb": 1024}])
            outcome, _ = await viewing.prompt(viewer, sid, "m1", text)
            report = await viewer.until(lambda e: e["type"] == "agent.crash_report", timeout=120)
            await viewer.call("session/stop", {"session_id": sid})
            return outcome, limit, report["data"]

    outcome, limit, report = node.plane.run(run)
    assert limit == str(256 * 2**20)
    assert outcome["outcome"] == "recovered", outcome  # killed, then loaded again
    assert report["oom_killed"] is True, report
    assert report["signal_name"] == "SIGKILL"
    assert "allocated 1024 MiB" not in report["stderr_tail"]


def test_cpu_max_throttles_the_session(node: BootedNode) -> None:
    sid = "s-cpu"

    async def run() -> tuple[str, dict[str, Any], str]:
        async with node.viewer(subject="grace") as viewer:
            await viewing.start(
                viewer, "hostile", "/srv/workspaces/grace/cpu", sid, reservation={"cpuMillis": 200}
            )
            cpu_max = read(node, f"{session_cgroup(sid)}/cpu.max").strip()
            [burn] = await viewing.attack(viewer, sid, "c1", [{"burn_cpu_s": 5}])
            stat = read(node, f"{session_cgroup(sid)}/cpu.stat")
            await viewer.call("session/stop", {"session_id": sid})
            return cpu_max, json.loads(burn["detail"]), stat

    cpu_max, burn, stat = node.plane.run(run)
    assert cpu_max == "20000 100000"  # 200 millicpus: 20 ms of every 100 ms
    counters = dict(line.split() for line in stat.splitlines())
    assert int(counters["nr_throttled"]) > 0 and int(counters["throttled_usec"]) > 0, stat
    node.vm.note(f"cpu.max 200m: {burn['cpu_s']} CPU s in {burn['wall_s']} s; {counters}")
    assert burn["cpu_s"] < 0.5 * burn["wall_s"], burn


def test_a_setsid_descendant_dies_with_the_session(node: BootedNode) -> None:
    sid = "s-setsid"

    def alive(pid: int) -> bool:
        return node.vm.run(["kill", "-0", str(pid)]).exit_code == 0

    async def run() -> tuple[int, int, bool, bool]:
        async with node.viewer(subject="heidi") as viewer:
            await viewing.start(viewer, "hostile", "/srv/workspaces/heidi/setsid", sid)
            agent, terminal = await viewing.attack(
                viewer, sid, "s1", [{"setsid": True}, {"terminal_setsid": True}]
            )
            pid, from_terminal = int(agent["detail"]), int(terminal["detail"])
            # the terminal's was released already; the agent's lives until the stop
            alive_before = alive(pid)
            terminal_gone = not alive(from_terminal)
            await viewer.call("session/stop", {"session_id": sid})
            return pid, from_terminal, alive_before, terminal_gone

    pid, from_terminal, alive_before, terminal_gone = node.plane.run(run)
    assert alive_before, f"the setsid'd descendant {pid} was not running"
    assert terminal_gone, f"the terminal's descendant {from_terminal} outlived its release"
    node.vm.wait_for(["sh", "-c", f"! kill -0 {pid} 2>/dev/null"], timeout=60)


def test_agents_run_as_pool_users_out_of_the_daemons_reach(node: BootedNode) -> None:
    sid, daemon = "s-reach", node.main_pid()
    attacks: list[dict[str, Any]] = [
        {"whoami": True},
        {"open": "/etc/vm-agent/callback-token"},
        {"open": "/etc/vm-agent/env"},
        {"open": "/etc/vm-agent/node-key.pem"},
        {"open": "/var/lib/vm-agent/events.sqlite3"},
        {"list": "/var/lib/vm-agent"},
        {"open": f"/proc/{daemon}/environ"},
        {"list": f"/proc/{daemon}"},
        {"signal": daemon},
        {"write": f"{UNIT_CGROUP}/cgroup.procs"},
        {"fs_read": "/etc/vm-agent/callback-token"},
    ]

    async def run() -> list[dict[str, Any]]:
        async with node.viewer(subject="heidi") as viewer:
            await viewing.start(viewer, "hostile", "/srv/workspaces/heidi/reach", sid)
            results = await viewing.attack(viewer, sid, "r1", attacks)
            await viewer.call("session/stop", {"session_id": sid})
            return results

    who, *refused = node.plane.run(run)
    me = json.loads(who["detail"])
    assert me["uid"] in POOL and me["gid"] == me["uid"] and me["groups"] == [], me
    assert me["home"] == f"/var/lib/vm-agent-homes/vm-agent-u{me['uid'] - POOL.start}"
    assert not {"VM_AGENT_CALLBACK_TOKEN", "NOTIFY_SOCKET"} & set(me["env"]), me["env"]
    assert viewing.escapes(refused) == [], refused
    by_attack = {json.dumps(r["attack"]): r["detail"] for r in refused}
    # /proc/<daemon> is not merely closed but invisible (ProtectProc=invisible)
    assert "FileNotFoundError" in by_attack[json.dumps({"list": f"/proc/{daemon}"})]


def test_two_owners_get_two_users_who_cannot_reach_each_other(node: BootedNode) -> None:
    async def run() -> tuple[int, list[dict[str, Any]]]:
        async with (
            node.viewer(subject="ivan") as ivan,
            node.viewer(subject="judy") as judy,
        ):
            await viewing.start(ivan, "hostile", "/srv/workspaces/ivan/proj", "s-ivan")
            await viewing.start(judy, "hostile", "/srv/workspaces/judy/proj", "s-judy")
            [ivan_who, _] = await viewing.attack(
                ivan, "s-ivan", "i1", [{"whoami": True}, {"write": "/srv/workspaces/ivan/proj/x"}]
            )
            ivan_home = json.loads(ivan_who["detail"])["home"]
            judy_results = await viewing.attack(
                judy,
                "s-judy",
                "j1",
                [
                    {"whoami": True},
                    {"open": "/srv/workspaces/ivan/proj/x"},
                    {"list": "/srv/workspaces/ivan"},
                    {"write": "/srv/workspaces/ivan/proj/y"},
                    {"list": ivan_home},
                    {"fs_read": "/srv/workspaces/ivan/proj/x"},
                ],
            )
            for viewer, sid in ((ivan, "s-ivan"), (judy, "s-judy")):
                await viewer.call("session/stop", {"session_id": sid})
            return json.loads(ivan_who["detail"])["uid"], judy_results

    ivan_uid, (judy_who, *tries) = node.plane.run(run)
    judy_uid = json.loads(judy_who["detail"])["uid"]
    assert ivan_uid in POOL and judy_uid in POOL and ivan_uid != judy_uid
    assert viewing.escapes(tries) == [], tries


def test_the_metadata_address_is_refused_to_agent_users(node: BootedNode) -> None:
    """Inside the guest only: its restricted network reaches nothing, and has no IPv4
    default route at all, so the test gives the metadata address the route a cloud would
    (otherwise the kernel refuses before the firewall sees anything)."""
    vm = node.vm
    vm.run(["ip", "route", "replace", f"{METADATA_V4}/32", "dev", "ens2"], check=True)
    counters_before = rule_counters(node)
    sid = "s-metadata"

    async def run() -> list[dict[str, Any]]:
        async with node.viewer(subject="heidi") as viewer:
            await viewing.start(viewer, "hostile", "/srv/workspaces/heidi/metadata", sid)
            results = await viewing.attack(
                viewer, sid, "md1", [{"connect": [METADATA_V4, 80]}, {"connect": [METADATA_V6, 80]}]
            )
            await viewer.call("session/stop", {"session_id": sid})
            return results

    try:
        v4, v6 = node.plane.run(run)
    finally:
        vm.run(["ip", "route", "del", f"{METADATA_V4}/32"])
    assert not v4["ok"] and "No route to host" in v4["detail"], v4  # ICMP admin-prohibited
    assert not v6["ok"] and "Permission denied" in v6["detail"], v6
    after = rule_counters(node)
    assert after[METADATA_V4] > counters_before[METADATA_V4], (counters_before, after)
    assert after[METADATA_V6] > counters_before[METADATA_V6], (counters_before, after)


def test_the_daemons_own_port_is_refused_to_agent_users(node: BootedNode) -> None:
    """An agent may not crowd the viewer port from inside the machine, by loopback or by the
    node's own address; the viewers outside reach it (the listener tests)."""
    address = node.vm.run(["ip", "-4", "-o", "addr", "show", "dev", "ens2"], check=True)
    own = address.stdout.split()[3].split("/")[0]
    before = port_rule_packets(node)
    sid = "s-own-port"

    async def run() -> list[dict[str, Any]]:
        async with node.viewer(subject="ivan") as viewer:
            await viewing.start(viewer, "hostile", "/srv/workspaces/ivan/port", sid)
            attacks = [{"connect": ["127.0.0.1", 8080]}, {"connect": [own, 8080]}]
            results = await viewing.attack(viewer, sid, "port1", attacks)
            await viewer.call("session/stop", {"session_id": sid})
            return results

    by_loopback, by_address = node.plane.run(run)
    for result in (by_loopback, by_address):
        assert not result["ok"] and "Connection refused" in result["detail"], result
    assert port_rule_packets(node) >= before + 2


def port_rule_packets(node: BootedNode) -> int:
    listed = node.vm.run(["nft", "--json", "list", "table", "inet", "vm_agent_metadata"])
    for item in json.loads(listed.stdout)["nftables"]:
        expr = item.get("rule", {}).get("expr", [])
        if any(e.get("match", {}).get("right") == "lo" for e in expr):
            return int(next(e["counter"]["packets"] for e in expr if "counter" in e))
    raise AssertionError("no rule for the daemon's port in the agents' firewall")


def rule_counters(node: BootedNode) -> dict[str, int]:
    """Packets each metadata rule has rejected (nft's counters)."""
    listed = node.vm.run(["nft", "--json", "list", "table", "inet", "vm_agent_metadata"])
    counters = {}
    for item in json.loads(listed.stdout)["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        expr = rule["expr"]
        address = next(
            (
                e["match"]["right"]
                for e in expr
                if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "daddr"
            ),
            None,
        )
        if address is None:
            continue  # the daemon's port rule (test_the_daemons_own_port_is_refused...)
        counters[address] = next(e["counter"]["packets"] for e in expr if "counter" in e)
    return counters
