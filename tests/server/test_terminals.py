"""terminal/*: a real shell in a real PTY over the viewer API; output in the durable log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.server.harness import Client, Daemon, RpcError, daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LINES = 3000


def output_of(events: list[dict[str, Any]], terminal_id: str) -> str:
    return "".join(
        e["data"]["data"]
        for e in events
        if e["type"] == "terminal.output" and e["data"]["terminal_id"] == terminal_id
    )


async def until(client: Client, done: Any, within_s: float = 30) -> list[dict[str, Any]]:
    """Reads events until ``done(events)``."""
    with anyio.fail_after(within_s):
        while not done(client.events):
            msg = await client.recv()
            if msg.get("method") == "session/event":
                client.events.append(msg["params"])
    return client.events


async def _open(d: Daemon, v: Client, **kw: Any) -> tuple[str, str]:
    sid = kw.pop("session_id", None) or (await d.start(v, "echo"))["session_id"]
    await v.call("session/subscribe", {"session_id": sid})
    opened = await v.call("terminal/open", {"session_id": sid, "cols": 100, "rows": 30, **kw})
    return sid, opened["terminal_id"]


async def _type(v: Client, sid: str, tid: str, line: str) -> None:
    await v.call("terminal/input", {"session_id": sid, "terminal_id": tid, "data": line})


async def test_a_real_shell_in_a_real_pty(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as v:
        sid, tid = await _open(d, v)
        # The shell's own arithmetic and its terminal: the echoed input cannot match these.
        await _type(v, sid, tid, "echo out-$((6*7)); tty; stty size\n")
        await until(v, lambda ev: "out-42" in output_of(ev, tid) and "30 100" in output_of(ev, tid))
        assert "/dev/pts/" in output_of(v.events, tid)
        await v.call(
            "terminal/resize", {"session_id": sid, "terminal_id": tid, "cols": 50, "rows": 10}
        )
        await _type(v, sid, tid, "stty size\n")
        await until(v, lambda ev: "10 50" in output_of(ev, tid))
        # ^C reaches the foreground job through the terminal: it is the shell's controlling tty.
        await _type(v, sid, tid, "sleep 300; echo after-$((1+1))\n")
        await anyio.sleep(0.3)
        await _type(v, sid, tid, "\x03echo int-$((2+3))\n")
        await until(v, lambda ev: "int-5" in output_of(ev, tid))
        assert "after-2" not in output_of(v.events, tid)
        listed = await v.call("terminal/list", {"session_id": sid})
        assert [t["terminal_id"] for t in listed["terminals"]] == [tid]
        closed = await v.call("terminal/close", {"session_id": sid, "terminal_id": tid})
        assert closed["exit"]["reason"] == "closed"
        await until(v, lambda ev: any(e["type"] == "terminal.exited" for e in ev))
        err = await _err(v, "terminal/input", {"session_id": sid, "terminal_id": tid, "data": "x"})
        assert err.code == -32001
        seqs = v.seqs()
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def _err(v: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as err:
        await v.call(method, params)
    return err.value


async def test_a_viewer_that_drops_mid_output_resumes_with_nothing_lost(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        # The shell stops halfway until the file `go` exists: the first viewer leaves in the
        # middle of the output, for certain.
        loop = (
            f"for i in $(seq 1 {LINES}); do echo line-$i; "
            f"if [ $i = {LINES // 2} ]; then while [ ! -e go ]; do sleep 0.01; done; fi; done\n"
        )
        async with d.viewer() as first:
            sid, tid = await _open(d, first)
            await _type(first, sid, tid, loop)
            await until(first, lambda ev: f"line-{LINES // 2}\r\n" in output_of(ev, tid))
            seen = list(first.events)
        (d.workdir / "go").touch()
        # Gone mid-output; the output goes on into the log. A new viewer resumes from a seq.
        async with d.viewer() as again:
            await again.call("session/subscribe", {"session_id": sid, "after_seq": seen[-1]["seq"]})
            await until(again, lambda ev: f"line-{LINES}\r\n" in output_of(ev, tid))
            events = seen + again.events
        assert f"line-{LINES // 2 + 1}\r\n" not in output_of(seen, tid)
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        text = output_of(events, tid)
        got = [ln for ln in re.split(r"[\r\n]+", text) if ln.startswith("line-")]
        assert got == [f"line-{i}" for i in range(1, LINES + 1)]
        # Coalesced: far fewer events than lines.
        outputs = [e for e in events if e["type"] == "terminal.output"]
        assert len(outputs) < LINES / 10, len(outputs)


async def test_a_late_joiner_gets_the_screen_then_live_output(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as first:
            sid, tid = await _open(d, first)
            await _type(first, sid, tid, "clear; echo screen-$((40+2))\n")
            await until(first, lambda ev: "screen-42" in output_of(ev, tid))
        async with d.viewer(d.token("read")) as late:
            snap = await late.call("terminal/snapshot", {"session_id": sid, "terminal_id": tid})
            assert any(line == "screen-42" for line in snap["screen"]["lines"]), snap
            assert (snap["screen"]["cols"], snap["screen"]["rows"]) == (100, 30)
            assert snap["exit"] is None
            await late.call("session/subscribe", {"session_id": sid, "after_seq": snap["seq"]})
            async with d.viewer() as typist:
                await _type(typist, sid, tid, "echo live-$((3*3))\n")
            await until(late, lambda ev: "live-9" in output_of(ev, tid))
            assert "screen-42" not in output_of(late.events, tid)  # nothing replayed twice
            assert late.events[0]["seq"] == snap["seq"] + 1


async def test_another_owner_is_refused_and_a_read_token_only_watches(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer(d.token(subject="alice")) as alice:
        sid, tid = await _open(d, alice)
        async with d.viewer(d.token(subject="bob")) as bob:
            for method, extra in (
                ("terminal/open", {}),
                ("terminal/input", {"terminal_id": tid, "data": "id\n"}),
                ("terminal/snapshot", {"terminal_id": tid}),
                ("terminal/close", {"terminal_id": tid}),
                ("terminal/list", {}),
            ):
                err = await _err(bob, method, {"session_id": sid, **extra})
                assert err.code == -32003 and "another user" in err.message, (method, err)
        async with d.viewer(d.token("read", subject="alice")) as reader:
            await reader.call("terminal/snapshot", {"session_id": sid, "terminal_id": tid})
            err = await _err(
                reader, "terminal/input", {"session_id": sid, "terminal_id": tid, "data": "x"}
            )
            assert err.code == -32003
        big = "x" * (16 * 1024 + 1)
        err = await _err(
            alice, "terminal/input", {"session_id": sid, "terminal_id": tid, "data": big}
        )
        assert err.code == -32001 and "bytes" in err.message
        assert bob_saw_nothing(alice.events)


def bob_saw_nothing(events: list[dict[str, Any]]) -> bool:
    return not any(e["type"] == "terminal.output" and "uid=" in e["data"]["data"] for e in events)


async def test_the_terminal_ends_with_its_session(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as v:
        sid, tid = await _open(d, v)
        await _type(v, sid, tid, "echo $$ > shell.pid; echo ok-$((1+1))\n")
        await until(v, lambda ev: "ok-2" in output_of(ev, tid))
        pid = int((d.workdir / "shell.pid").read_text())
        session = d.supervisor.get(sid)
        session.close()
        with anyio.fail_after(20):
            await session.stopped_for_good.wait()
        await until(v, lambda ev: any(e["type"] == "terminal.exited" for e in ev))
        with anyio.fail_after(10):
            while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
                await anyio.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
