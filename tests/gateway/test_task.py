"""`vm-agent acp --control-plane URL --token USER_TOKEN --task ID`: the control plane says
where the task's session is (`POST /api/tasks/{id}/connection`) and the gateway then drives
that session as `--session` does, against a real control plane (its dispatcher ran the
task) and a real daemon on loopback; and renews its viewer token through the control plane
when the daemon closes the connection because the token expired (4001)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest

from tests.daemon.harness import NODE, base_env, vm_agent
from tests.dispatch.harness import Stack, node_ca_tls, stack
from tests.gateway.harness import INIT, AcpClient, acp_gateway

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# The daemon's verifier accepts a token this long past its exp, then closes it (4001).
DAEMON_LEEWAY_S = 30


def task_gateway(tmp: Path, s: Stack, task: str, user: str = "alice") -> Any:
    token = s.plane.tokens.mint_user_token(user)
    return acp_gateway(tmp, "--control-plane", s.url, "--token", token, "--task", task)


async def a_task_at_rest(s: Stack, task: str, agent: str = "fake") -> dict[str, Any]:
    """A task with follow-ups whose first prompt ran: its session waits on the node."""
    await s.submit(taskId=task, agent=agent, prompt="first", followUps=True)
    return await s.until(task, "awaiting_follow_up", "completed", "failed", "crashed")


async def prompt_through(client: AcpClient, session_id: str, text: str) -> dict[str, Any]:
    await client.call("initialize", INIT)
    new = await client.call("session/new", {"cwd": "/anywhere", "mcpServers": []})
    assert new["sessionId"] == session_id  # the task's own session, not a new one
    blocks = [{"type": "text", "text": text}]
    answer: dict[str, Any] = await client.call(
        "session/prompt", {"sessionId": session_id, "prompt": blocks}
    )
    return answer


async def test_the_owner_drives_the_task_s_session_through_the_gateway(
    tmp_path: Path, database_url: str
) -> None:
    async with stack(tmp_path, database_url) as s:
        task = await a_task_at_rest(s, "t1")
        assert task["status"] == "awaiting_follow_up", task
        r = await s.client.post("/api/tasks/t1/connection", headers=s.user("alice"))
        assert r.status_code == 200, r.text
        found = r.json()
        assert r.headers["cache-control"] == "no-store"
        assert found["sessionId"] == task["sessionId"] and found["nodeId"] == NODE
        assert found["viewerUrl"] == s.viewer_url
        assert (found["tlsName"], found["caPem"]) == (None, None)  # ws:// on loopback
        claims = jwt.decode(found["token"], options={"verify_signature": False})
        assert (claims["sub"], claims["node"], claims["aud"]) == ("alice", NODE, "vm-agent")
        assert claims["scope"] == "read write"  # never "node": that reaches every session
        ttl = s.plane.settings.task_connection_token_ttl_s
        assert claims["exp"] - claims["iat"] == ttl
        assert abs(found["expiresAt"] - claims["exp"]) <= 1

        async with task_gateway(tmp_path, s, "t1") as client:
            answer = await prompt_through(client, task["sessionId"], "through the gateway")
            assert answer["stopReason"] == "end_turn"
            assert answer["_meta"]["vm-agent"]["outcome"] == "completed"
            said = "".join(
                u["update"]["content"]["text"]
                for u in client.updates(task["sessionId"])
                if u["update"]["sessionUpdate"] == "agent_message_chunk"
            )
            assert "through the gateway" in said
        # The prompt is in the session's durable log, which the control plane mirrors.
        events = await s.events_until("t1", "prompt.started")
        with anyio.fail_after(60):
            while not any(
                e["type"] == "prompt.started"
                and e["data"]["prompt"] == [{"type": "text", "text": "through the gateway"}]
                for e in events
            ):
                await anyio.sleep(0.05)
                events = await s.events("t1")

        # Another user's task is not there for bob: exit 1 with the control plane's reason.
        for user, task_id, reason in [
            ("bob", "t1", "HTTP 404): no such task"),
            ("alice", "nope", "HTTP 404): no such task"),
        ]:
            argv = vm_agent(
                "acp", "--control-plane", s.url, "--task", task_id,
                "--token", s.plane.tokens.mint_user_token(user),
            )  # fmt: skip
            with anyio.fail_after(60):
                done = await anyio.run_process(argv, env=base_env(), check=False, input=b"")
            assert done.returncode == 1
            assert done.stdout == b""  # stdout is the client's: only ACP ever goes there
            assert reason in done.stderr.decode()


@pytest.mark.slow
async def test_over_tls_the_gateway_trusts_the_node_ca_the_control_plane_gave(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path, tls=node_ca_tls) as s:
        task = await a_task_at_rest(s, "t1")
        r = await s.client.post("/api/tasks/t1/connection", headers=s.user("alice"))
        found = r.json()
        assert found["viewerUrl"].startswith("wss://127.0.0.1:")
        # The certificate names the node, not the address: checked against that name.
        assert found["tlsName"] == s.plane.node_ca.dns_name(NODE)
        assert found["caPem"] == s.plane.node_ca.certificate_pem()
        async with task_gateway(tmp_path, s, "t1") as client:
            answer = await prompt_through(client, task["sessionId"], "over tls")
            assert answer["stopReason"] == "end_turn"


@pytest.mark.slow
async def test_an_expired_token_is_renewed_through_the_control_plane_mid_prompt(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path) as s:
        task = await a_task_at_rest(s, "t1", agent="fake-slow")
        sid = task["sessionId"]
        # From here the control plane mints tokens that the daemon closes a few seconds
        # after the gateway connects: each expired DAEMON_LEEWAY_S - 6 s ago by their exp.
        ttl = s.plane.settings.task_connection_token_ttl_s
        back = ttl + DAEMON_LEEWAY_S - 6
        s.plane.tokens = s.plane.tokens.with_clock(lambda: time.time() - back)
        async with task_gateway(tmp_path, s, "t1") as client:
            await client.call("initialize", INIT)
            await client.call("session/new", {"cwd": "/x", "mcpServers": []})
            # 200 chunks 50 ms apart (the stack's fake-slow): the token expires mid-answer.
            text = "".join(f"<{i:03d}>" for i in range(200))
            blocks = [{"type": "text", "text": text}]
            reply = await client.answer(
                await client.send("session/prompt", {"sessionId": sid, "prompt": blocks}), 120
            )
            assert reply["result"]["stopReason"] == "end_turn", reply
            chunks = [
                u["update"]["content"]["text"]
                for u in client.updates(sid)
                if u["update"]["sessionUpdate"] == "agent_message_chunk"
            ]
            assert "".join(chunks) == text  # none lost, none twice, in order
        assert "renewed the viewer token" in (tmp_path / "gateway.err").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--task", "t1", "--token", "u"), "--task needs --control-plane"),
        (("--task", "t1", "--control-plane", "ftp://h", "--token", "u"), "http:// or https://"),
        (("--task", "t1", "--control-plane", "http://h"), "--task needs a user token"),
        (("--task", "t1", "--control-plane", "http://h", "--token", "u", "--url", "ws://h/v1/ws"),
         "no --url/--ca-file/--cwd"),
        (("--task", "t1", "--agent", "a"), "not allowed with argument"),
        (("--task", "t1", "--session", "s"), "not allowed with argument"),
        (("--token", "t"), "give --url"),
    ],
)  # fmt: skip
async def test_task_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    env = {k: v for k, v in base_env().items() if not k.startswith("VM_AGENT_")}
    with anyio.fail_after(60):
        done = await anyio.run_process(vm_agent("acp", *args), env=env, check=False, input=b"")
    assert done.returncode == 2
    assert done.stdout == b""
    assert message in done.stderr.decode()
