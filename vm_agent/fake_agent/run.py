"""Process start-up and the event loop of the fake agent."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import anyio
import anyio.abc

from vm_agent.fake_agent.config import Config, ConfigError, parse_config
from vm_agent.fake_agent.transcript import first_time
from vm_agent.fake_agent.wire import LinePeer, log, write_all

GARBAGE_BANNER = b"Welcome! (a shell profile printed this line, it is not JSON)\n"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        log(f"fake-agent: error: {exc}")
        return 2
    except SystemExit as exc:  # argparse's --help and usage errors: keep main() -> int
        return exc.code if isinstance(exc.code, int) else 2
    if config.scenario == "exit-on-start" and (
        not config.once or first_time(config.state_dir or ".", "exit-on-start")
    ):
        log("fake-agent: exiting on start")
        return config.exit_code
    if config.scenario == "spawns-children":
        from vm_agent.fake_agent.children import spawn_children  # noqa: PLC0415

        spawn_children(config.children, config.pid_file)
    if config.scenario == "garbage-lines":
        try:
            write_all(1, GARBAGE_BANNER)
        except BrokenPipeError:
            return 0
    return anyio.run(_serve, config)


async def _serve(config: Config) -> int:
    from vm_agent.fake_agent.agent import FakeAgent  # noqa: PLC0415

    peer = LinePeer()
    agent = FakeAgent(config, peer)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(_exit_when_stdout_breaks, peer, task_group)
        await peer.serve(
            task_group, agent.on_request, agent.on_notification, agent.on_request_arrival
        )
        if config.scenario == "hang":
            log("fake-agent: stdin closed, hanging on regardless")
            await anyio.sleep_forever()
        task_group.cancel_scope.cancel()
    return 0


async def _exit_when_stdout_breaks(peer: LinePeer, task_group: anyio.abc.TaskGroup) -> None:
    await peer.stdout_broken.wait()
    log("fake-agent: stdout is broken, exiting")
    task_group.cancel_scope.cancel()
