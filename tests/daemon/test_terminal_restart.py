"""`vm-agent serve` SIGKILLed with a person's terminal open: the shell ends with it (its
PTY hangs up), and the restarted daemon still has the terminal's history and says it ended."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import pytest

from tests.daemon.harness import (
    Viewer,
    control_plane,
    notify_socket,
    serving,
    stopped_at_exit,
    write_agents_file,
)
from tests.token_files import write_token

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

SESSION = "s-pty"


def _output(events: list[dict[str, object]]) -> str:
    out = ""
    for e in events:
        data = e["data"]
        if e["type"] == "terminal.output" and isinstance(data, dict):
            out += str(data["data"])
    return out


async def test_terminal_history_survives_a_sigkill_and_the_viewer_hears_it_ended(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    agents = write_agents_file(tmp_path, "fake", "--scenario", "echo")
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            token = plane.viewer_token()
            process, url = await serving(tmp_path, plane, notify, agents)
            async with stopped_at_exit(process), Viewer.connect(url, token) as viewer:
                await viewer.call(
                    "session/start", {"agent": "fake", "cwd": str(work), "session_id": SESSION}
                )
                await viewer.call("session/subscribe", {"session_id": SESSION})
                opened = await viewer.call("terminal/open", {"session_id": SESSION})
                tid = opened["terminal_id"]
                await viewer.call(
                    "terminal/input",
                    {
                        "session_id": SESSION,
                        "terminal_id": tid,
                        "data": "echo $$ > shell.pid; echo before-$((20+1))\n",
                    },
                )
                await viewer.until(lambda e: "before-21" in _output(viewer.events))
                seen = list(viewer.events)
                shell = int((work / "shell.pid").read_text())
                process.kill()
                await process.wait()
            # Its PTY's master went with the daemon: the shell had a hangup and ended.
            with anyio.fail_after(20):
                while Path(f"/proc/{shell}").exists() and _state(shell) != "Z":
                    await anyio.sleep(0.05)

            process, url = await serving(tmp_path, plane, notify, agents)
            async with stopped_at_exit(process), Viewer.connect(url, token) as viewer:
                head = (await viewer.call("session/subscribe", {"session_id": SESSION}))["head_seq"]
                ended = await viewer.until(lambda e: e["type"] == "terminal.exited")
                assert ended["data"] == {
                    "terminal_id": tid,
                    "exit_code": None,
                    "signal": None,
                    "reason": "daemon restarted",
                }
                await viewer.until(lambda e: e["seq"] == head)
                replay = viewer.events
                assert [e["seq"] for e in replay] == list(range(1, head + 1))
                by_seq = {e["seq"]: e for e in replay}
                assert all(by_seq[e["seq"]] == e for e in seen), "history differs after restart"
                assert "before-21" in _output(replay)
                listed = await viewer.call("terminal/list", {"session_id": SESSION})
                assert listed["terminals"] == []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
