"""`vm-agent serve` as root, as systemd runs it: alone in a cgroup of its own (Delegate=yes).

The daemon moves itself into ``<cgroup>/daemon`` and puts each session under
``<cgroup>/sessions``; the hostile agent it runs as a pool user cannot read the callback
token, the env file, the state directory or the daemon's /proc entries, nor signal it. A
setsid'd descendant dies with session/stop; after a restart the same owner's user (and
HOME, where the agent keeps its transcripts) serves session/recover.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from anyio.abc import Process

from tests.containment.harness import alive, refused_as
from tests.containment.pool import TestPool, fake_agent_argv, require_cgroup_v2, require_root
from tests.daemon.harness import (
    Notify,
    Plane,
    Viewer,
    control_plane,
    daemon_env,
    notify_socket,
    sigterm_and_wait,
    start_process,
)
from tests.token_files import write_token
from vm_agent.containment.cgroupfs import CgroupDir
from vm_agent.containment.cgroups import cgroup_path_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

SID = "s-contained"


@contextlib.contextmanager
def unit_cgroup() -> Any:
    """A cgroup standing in for the unit's (what Delegate=yes gives the daemon)."""
    own = cgroup_path_of(os.getpid())
    assert own is not None
    cg = CgroupDir(own / f"vmat-unit-{os.getpid()}").make()
    try:
        yield cg
    finally:
        cg.kill()
        for _ in range(100):
            if not cg.populated():
                break
            time.sleep(0.05)
        cg.remove_tree()


async def _serve(
    tmp: Path, plane: Plane, notify: Notify, env: dict[str, str], cg: CgroupDir
) -> tuple[Process, str]:
    start = len(notify.messages)
    script = f'echo $$ > {cg.path}/cgroup.procs && exec "$@"'
    argv = ["sh", "-c", script, "sh", sys.executable, "-m", "vm_agent", "serve"]
    process = await start_process(argv, env, tmp / "daemon.log")
    await notify.wait_for("READY=1", start=start)
    port = (await notify.wait_for(r"STATUS=serving on [^ ]+:(\d+);.*", start=start))[1]
    return process, f"ws://127.0.0.1:{port}/v1/ws"


async def _attack(viewer: Viewer, attacks: list[dict[str, Any]], prompt_id: str) -> list[Any]:
    """Runs attacks in the session (the viewer is subscribed to it); their results."""
    outcome = await viewer.call(
        "session/prompt",
        {
            "session_id": SID,
            "prompt_id": prompt_id,
            "prompt": [{"type": "text", "text": json.dumps(attacks)}],
        },
        timeout=120,
    )
    assert outcome["outcome"] == "completed", outcome
    event = await viewer.until(
        lambda e: (
            e["type"] == "acp.update" and e["data"]["update"]["content"]["text"][:1] == "["
            if e["data"].get("update", {}).get("sessionUpdate") == "agent_message_chunk"
            else False
        )
    )
    viewer.events.clear()
    results: list[Any] = json.loads(event["data"]["update"]["content"]["text"])
    return results


def _report(event: dict[str, Any]) -> bool:
    """The hostile agent's answer: one message chunk holding a JSON list."""
    update = event["data"].get("update", {}) if event["type"] == "acp.update" else {}
    if update.get("sessionUpdate") != "agent_message_chunk":
        return False
    return str(update["content"].get("text", "")).startswith("[")


@contextlib.asynccontextmanager
async def _pieces(tmp: Path) -> AsyncIterator[tuple[Plane, Notify]]:
    with tempfile.TemporaryDirectory(prefix="vmac-") as short:
        async with (
            control_plane(tmp / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            yield plane, notify


async def test_the_daemon_as_systemd_runs_it(agent_pool: TestPool, tmp_path: Path) -> None:
    require_root()
    require_cgroup_v2()
    base = agent_pool.base  # traversable by agents: only the files' own modes protect them
    state, token_file, env_file = base / "d-state", base / "d-token", base / "d-env"
    work = agent_pool.workspaces / "daemon-proj"
    agents = tmp_path / "agents.toml"
    command = fake_agent_argv("--scenario", "hostile", "--state-dir", "~/.fake-hostile")
    agents.write_text(
        "[agents.hostile]\ncommand = [" + ", ".join(json.dumps(a) for a in command) + "]\n"
    )
    try:
        with unit_cgroup() as cg:
            async with _pieces(tmp_path) as (plane, notify):
                write_token(token_file, plane.callback_token())
                write_token(env_file, "VM_AGENT_SESSION_PIDS_MAX=256")
                env = daemon_env(tmp_path, plane, **agent_pool.env())
                env.pop("VM_AGENT_AGENTS_AS_ROOT")
                env.update(
                    VM_AGENT_STATE_DIR=str(state),
                    VM_AGENT_CALLBACK_TOKEN_FILE=str(token_file),
                    VM_AGENT_ENV_FILE=str(env_file),
                    VM_AGENT_AGENTS_FILE=str(agents),
                    NOTIFY_SOCKET=str(notify.path),
                )
                process, url = await _serve(tmp_path, plane, notify, env, cg)
                daemon_pid = process.pid  # sh exec'd the daemon: the same pid
                assert daemon_pid in cg.child("daemon").procs()
                token = plane.viewer_token()
                async with Viewer.connect(url, token) as viewer:
                    started = await viewer.call(
                        "session/start", {"agent": "hostile", "cwd": str(work), "session_id": SID}
                    )
                    assert started["state"] == "ready", started
                    await viewer.call("session/subscribe", {"session_id": SID})
                    agent_cg = cg.child("sessions").child(f"session-{SID}")
                    [leaf] = agent_cg.children()
                    assert leaf.path.name.startswith("agent-") and leaf.procs()
                    # The env file's pids limit reached the session's cgroup; where the
                    # pids controller is missing (cgroup v1 holds it, as here), the daemon
                    # said so at start and the session's limits still name it (below).
                    has_pids = (agent_cg.path / "pids.max").exists()
                    if has_pids:
                        assert agent_cg.read("pids.max").strip() == "256"
                    # How each must be refused (a mistyped path would be ENOENT).
                    table: list[tuple[dict[str, Any], str]] = [
                        ({"open": str(token_file)}, "EACCES"),
                        ({"open": str(env_file)}, "EACCES"),
                        ({"open": str(state / "events.sqlite3")}, "EACCES"),
                        ({"list": str(state)}, "EACCES"),
                        ({"open": f"/proc/{daemon_pid}/environ"}, "EACCES"),
                        ({"open": f"/proc/{daemon_pid}/mem"}, "EACCES"),
                        ({"list": f"/proc/{daemon_pid}/fd"}, "EACCES"),
                        ({"signal": daemon_pid}, "EPERM"),
                        ({"write": str(cg.path / "cgroup.procs")}, "EACCES"),
                        (
                            {"fs_read": str(token_file)},
                            f"rpc -32602: {token_file} is outside the allowed",
                        ),
                    ]
                    for attack, _ in table:
                        if "signal" not in attack:
                            assert os.path.lexists(next(iter(attack.values()))), attack
                    results = await _attack(viewer, [a for a, _ in table], "p1")
                    refused_as(results, [how for _, how in table])
                    [who, daemonized] = await _attack(
                        viewer, [{"whoami": True}, {"setsid": True}], "p2"
                    )
                    uid = json.loads(who["detail"])["uid"]
                    assert uid in [u.uid for u in agent_pool.spec.users()]
                    pid = int(daemonized["detail"])
                    assert alive(pid)
                    await viewer.call("session/stop", {"session_id": SID})
                    # At once: the answer comes once the session's cgroup is empty.
                    assert not alive(pid), f"setsid descendant {pid} outlived session/stop"
                assert await sigterm_and_wait(process) == 0
                # Nothing of the sessions is left: no process, no session cgroup.
                assert cg.child("sessions").children() == []

                # -- a restart: the same owner's user and HOME serve session/recover ------
                process, url = await _serve(tmp_path, plane, notify, env, cg)
                async with Viewer.connect(url, token) as viewer:
                    recovered = await viewer.call("session/recover", {"session_id": SID})
                    assert recovered["state"] == "ready", recovered
                    await viewer.call(
                        "session/subscribe",
                        {"session_id": SID, "after_seq": recovered["head_seq"]},
                    )
                    [who_again] = await _attack(viewer, [{"whoami": True}], "p3")
                    assert json.loads(who_again["detail"])["uid"] == uid
                assert await sigterm_and_wait(process) == 0
        log = (tmp_path / "daemon.log").read_text()
        assert "the agent users are not as they should be" not in log  # the pool was there
        assert re.search(rf"session {SID} runs as .*, pids 256\)", log), log
        if not has_pids:
            assert re.search(r"without the .*pids controller.*pids\.max cannot be enforced", log)
    finally:
        shutil.rmtree(state, ignore_errors=True)
        for path in (token_file, env_file):
            path.unlink(missing_ok=True)
