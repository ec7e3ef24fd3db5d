"""Stopping an agent process group, including from a scope that is being cancelled."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.processes import descendants, survivors
from vm_agent.process.agent_process import StopTimings, spawn_agent
from vm_agent.process.catalog import fake_agent_command
from vm_agent.process.procgroup import group_alive

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

QUICK = StopTimings(stdin_grace_s=0.2, term_grace_s=0.5)


async def test_leaving_a_cancelled_scope_still_stops_and_reaps_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "kids"
    argv = fake_agent_command("--scenario", "spawns-children", "--pid-file", str(pid_file))
    pgid = None
    tree: dict[int, int] = {}
    with anyio.fail_after(20):  # a hang here is the bug this test is about
        async with anyio.create_task_group() as tg:

            async def run_agent() -> None:
                nonlocal pgid
                async with spawn_agent(argv, cwd=tmp_path, env={}, stop_timings=QUICK) as agent:
                    pgid = agent.pgid
                    await anyio.sleep_forever()

            tg.start_soon(run_agent)
            while not pid_file.exists():
                await anyio.sleep(0.05)
            assert pgid is not None
            # The agent and everything under it, whatever group each is in by now.
            tree = descendants(pgid)
            tg.cancel_scope.cancel()  # the watcher task dies with the scope
    grandchildren = {int(line) for line in pid_file.read_text().split()}
    assert grandchildren and grandchildren <= set(tree)
    assert pgid is not None and not group_alive(pgid)
    assert survivors(tree) == []
    assert not Path(f"/proc/{pgid}").exists() or _is_zombie(pgid)


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


async def test_the_exit_record_of_an_agent_ignoring_stdin_close_and_sigterm(tmp_path: Path) -> None:
    # ignores stdin closing and SIGTERM: only the SIGKILL of the group ends it
    argv = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
    async with spawn_agent(argv, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}) as agent:
        await anyio.sleep(0.3)
        record = await agent.stop(QUICK)
    assert record.signal == 9 and record.exit_code is None
    assert "SIGKILL" in record.describe()
    assert not group_alive(agent.pgid)


async def test_an_unstartable_command_is_a_clear_error(tmp_path: Path) -> None:
    from vm_agent.process.agent_process import AgentStartError

    with pytest.raises(AgentStartError, match="cannot start '/no/such/agent'"):
        async with spawn_agent(["/no/such/agent"], cwd=tmp_path, env={}):
            pass
