"""Hostile viewers at session/start (issue 28): a viewer cannot lift its own limits, start
sessions without bound, load another user's ACP session, or take a session id the control
plane made for someone else. Real daemon parts, fake agents and the real control plane on
loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from control_plane.dispatch import sessions
from tests.server.harness import NODE, Client, Daemon, RpcError, daemon, fake, text
from vm_agent.process.catalog import AgentSpec, fake_agent_command

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

API_KEY = "sk-fake-" + "a1" * 12


def _user(d: Daemon, name: str) -> str:
    return d.token("read", "write", subject=name)


async def _refused(client: Client, params: dict[str, Any], code: int) -> RpcError:
    with pytest.raises(RpcError) as err:
        await client.call("session/start", params)
    assert err.value.code == code, err.value
    return err.value


async def _ids(client: Client) -> list[str]:
    return sorted(s["session_id"] for s in (await client.call("session/list"))["sessions"])


# -- item 5: a viewer sets its own limits ----------------------------------------------------


async def test_a_viewer_cannot_lift_its_own_limits(tmp_path: Path) -> None:
    async with (
        daemon(tmp_path, session_max_memory_mb=4096, session_max_cpu_millis=2000) as d,
        d.viewer(_user(d, "mallory")) as mallory,
    ):
        base = {"agent": "echo", "cwd": str(d.workdir)}
        for reservation, says in [
            ({"memoryMb": 1e12, "cpuMillis": 1e9}, "memoryMb 1000000000000 is over"),
            ({"memoryMb": 4097}, "over this node's cap of 4096"),
            ({"cpuMillis": 2001}, "over this node's cap of 2000"),
            ({"memoryMb": -1}, "must be positive"),
            ({"memoryMb": 0.5}, "whole number"),
            ('{"memoryMb": 1e12}', "over this node's cap"),
        ]:
            err = await _refused(mallory, {**base, "reservation": reservation}, -32602)
            assert says in err.message, (reservation, err.message)
        # Infinity and NaN (a JSON reader that accepts them): invalid params, not -32603.
        for bad in ("Infinity", "NaN", "-Infinity"):
            frame = (
                '{"jsonrpc":"2.0","id":"x","method":"session/start","params":{"agent":"echo",'
                f'"cwd":{json.dumps(str(d.workdir))},"reservation":{{"memoryMb":{bad}}}}}}}'
            )
            await mallory.ws.send(frame)
            answer = await mallory.answer("x")
            assert answer["error"]["code"] == -32602, (bad, answer)
            assert "finite" in answer["error"]["message"]
        # Nothing was half-made: no session, no registry row.
        assert await _ids(mallory) == []
        assert await d.log.list_sessions() == []
        # Within the caps it starts, with what was asked.
        ok = await d.start(mallory, "echo", reservation={"memoryMb": 4096, "cpuMillis": 500})
        assert ok["state"] == "ready" and ok["reservation"] == {"memoryMb": 4096, "cpuMillis": 500}


# -- item 6: no cap on sessions ---------------------------------------------------------------


async def test_sessions_are_capped_per_owner_and_per_node(tmp_path: Path) -> None:
    async with (
        daemon(tmp_path, max_sessions=4, max_sessions_per_owner=2) as d,
        d.viewer(_user(d, "alice")) as alice,
        d.viewer(_user(d, "bob")) as bob,
        d.viewer(d.token("node", subject="control-plane")) as node,
    ):
        # Five starts of one owner at once (all sent before any answer): the cap's worth.
        for i in range(5):
            await alice.send(
                {
                    "jsonrpc": "2.0",
                    "id": f"a{i}",
                    "method": "session/start",
                    "params": {"agent": "echo", "cwd": str(d.workdir), "session_id": f"a{i}"},
                }
            )
        answers: list[dict[str, Any]] = []
        while len(answers) < 5:  # in whatever order they come
            msg = await alice.recv()
            if msg.get("method") is None:
                answers.append(msg)
        started = [m for m in answers if "result" in m]
        refused = [m["error"] for m in answers if "error" in m]
        assert len(started) == 2, answers
        assert {e["code"] for e in refused} == {-32001}
        assert all("MAX_SESSIONS_PER_OWNER=2" in e["message"] for e in refused), refused
        assert len(await _ids(alice)) == 2
        # Another owner is not held back by alice's cap.
        await d.start(bob, "echo", session_id="b1")
        # The control plane is held to the node's cap only, also for alice.
        await d.start(node, "echo", session_id="n-for-alice", owner="alice")
        # The node is full now (4): everyone, the node scope too, hears which cap.
        err = await _refused(bob, {"agent": "echo", "cwd": str(d.workdir)}, -32001)
        assert "MAX_SESSIONS=4" in err.message
        err = await _refused(node, {"agent": "echo", "cwd": str(d.workdir)}, -32001)
        assert "MAX_SESSIONS=4" in err.message
        # A stopped session frees its place.
        await bob.call("session/stop", {"session_id": "b1"})
        await d.start(bob, "echo", session_id="b2")


async def test_a_recovery_counts_against_the_caps(tmp_path: Path) -> None:
    # Stopped sessions take no place; bringing one back takes one, as a start does.
    agent = fake("echo", "--state-dir", str(tmp_path / "transcripts"))
    async with (
        daemon(tmp_path, [agent], max_sessions_per_owner=1) as d,
        d.viewer(_user(d, "alice")) as alice,
    ):
        await d.start(alice, "echo", session_id="first")
        await alice.call("session/stop", {"session_id": "first"})
        await d.start(alice, "echo", session_id="second")
        with pytest.raises(RpcError) as err:
            await alice.call("session/recover", {"session_id": "first"})
        assert err.value.code == -32001 and "MAX_SESSIONS_PER_OWNER=1" in err.value.message
        assert d.supervisor.get("first").state.value == "stopped"
        await alice.call("session/stop", {"session_id": "second"})
        recovered = await alice.call("session/recover", {"session_id": "first"})
        assert recovered["state"] == "ready"


# -- item 7: another user's ACP session -------------------------------------------------------


async def test_a_session_loads_only_an_acp_session_its_owner_had(tmp_path: Path) -> None:
    # Both owners' agents run as one uid with one state directory, as in dev: the agent
    # itself would load any transcript it is asked for.
    transcripts = tmp_path / "transcripts"
    agent = fake("echo", "--state-dir", str(transcripts))
    async with (
        daemon(tmp_path, [agent]) as d,
        d.viewer(_user(d, "alice")) as alice,
        d.viewer(_user(d, "bob")) as bob,
    ):
        mine = await d.start(alice, "echo", session_id="s-alice")
        acp_id = mine["acp_session_id"]
        assert acp_id
        await alice.call(
            "session/prompt", {"session_id": "s-alice", "prompt": text("private"), "prompt_id": "a"}
        )
        await alice.call("session/stop", {"session_id": "s-alice"})
        [transcript] = transcripts.glob(f"{acp_id}*")
        before = transcript.read_bytes()
        for attempt in (acp_id, "fake-" + "0" * 32):
            err = await _refused(
                bob,
                {"agent": "echo", "cwd": str(d.workdir), "acp_session_id": attempt},
                -32003,
            )
            assert "forbidden" in err.message and "private" not in err.message
        assert await _ids(bob) == []
        assert transcript.read_bytes() == before  # nothing appended, nothing loaded
        # Its owner loads it (the refusal above is about whose it is, nothing else).
        again = await d.start(alice, "echo", session_id="s-alice-2", acp_session_id=acp_id)
        assert again["state"] == "ready" and again["acp_session_id"] == acp_id


# -- item 8: a control-plane session id taken by another user ---------------------------------


def _env_agent() -> AgentSpec:
    return AgentSpec(
        name="fake-env",
        command=fake_agent_command("--scenario", "env"),
        credentials=("FAKE_API_KEY",),
    )


def _made_for(d: Daemon, owner: str, agent: str = "fake-env") -> str:
    made = sessions.AgentSession(
        session_id=sessions.new_session_id(),
        node_id=NODE,
        agent=agent,
        owner=owner,
        workspace_id=None,
        created_by="admin",
        created_at=time.time(),
    )
    return sessions.make_session(d.plane.engine, made).session_id


def _credential_calls(d: Daemon, sid: str) -> int:
    return sum(1 for path, _ in d.cp_requests if path.endswith(f"{sid}/agent-credentials"))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


async def test_a_control_plane_session_id_belongs_to_the_owner_it_recorded(
    tmp_path: Path,
) -> None:
    secrets = {"fake-env": {"FAKE_API_KEY": API_KEY}}
    async with (
        daemon(tmp_path, [_env_agent(), fake("echo")], link=True, secrets=secrets) as d,
        d.viewer(_user(d, "alice")) as alice,
        d.viewer(_user(d, "bob")) as bob,
        d.viewer(d.token("node", subject="control-plane")) as node,
    ):
        sid = _made_for(d, "alice")
        params = {"agent": "fake-env", "cwd": str(d.workdir), "session_id": sid}
        err = await _refused(bob, params, -32003)
        assert "made for another user" in err.message
        # The node scope cannot hand it to bob either.
        err = await _refused(node, {**params, "owner": "bob"}, -32003)
        assert "made for another user" in err.message
        # Another agent under that id: refused as well (its credentials are not echo's).
        other = await _refused(alice, {**params, "agent": "echo"}, -32003)
        assert "for agent 'fake-env', not 'echo'" in other.message
        assert await _ids(bob) == [] and await _ids(node) == []
        assert _credential_calls(d, sid) == 0  # nothing was fetched for bob
        # Alice's start then works, and her agent has her session's credentials.
        mine = await alice.call("session/start", params)
        assert (mine["state"], mine["owner"]) == ("ready", "alice")
        assert _credential_calls(d, sid) == 1
        pid = d.supervisor.get(sid).agent_pid
        assert pid is not None and _environ(pid)["FAKE_API_KEY"] == API_KEY

        # The node scope starting a session it made, naming no owner: the recorded one.
        theirs = _made_for(d, "carol")
        started = await node.call("session/start", {**params, "session_id": theirs})
        assert started["owner"] == "carol"


async def test_credentials_go_only_to_the_owner_the_control_plane_recorded(
    tmp_path: Path,
) -> None:
    # A session that got past the start without the check (a log from an older daemon, a
    # control plane that could not be asked then): the credentials answer names the owner,
    # and the daemon refuses them before its agent starts.
    secrets = {"fake-env": {"FAKE_API_KEY": API_KEY}}
    async with daemon(tmp_path, [_env_agent()], link=True, secrets=secrets) as d:
        sid = _made_for(d, "alice")
        d.supervisor.session_details = None
        session = await d.supervisor.start_session(
            "fake-env", d.workdir, session_id=sid, owner="bob"
        )
        assert (await session.wait_settled()).value == "error"
        assert "another user" in (session.describe()["error"] or "")
        assert session.spawned_pids == []  # no agent ever ran with them
        assert _credential_calls(d, sid) == 1


async def test_an_unreachable_control_plane_refuses_the_start(tmp_path: Path) -> None:
    async with daemon(tmp_path, link=True) as d, d.viewer(_user(d, "alice")) as alice:

        async def down(session_id: str, agent: str) -> Any:
            raise OSError("connection refused")

        d.supervisor.session_details = down
        err = await _refused(
            alice, {"agent": "echo", "cwd": str(d.workdir), "session_id": "s-any"}, -32001
        )
        assert "could not confirm" in err.message
        assert await _ids(alice) == []
        # Without a session id there is nothing to confirm.
        assert (await d.start(alice, "echo"))["state"] == "ready"
