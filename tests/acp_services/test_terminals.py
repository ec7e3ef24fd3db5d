"""terminal/* with real processes."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from vm_agent.acp.terminals import TailBuffer, TerminalManager
from vm_agent.jsonrpc.errors import INVALID_PARAMS, RESOURCE_NOT_FOUND, JsonRpcError
from vm_agent.process import procgroup

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# A shell that prints its pid (the group id) and waits on a child that ignores SIGTERM.
STUBBORN = '(trap "" TERM; exec sleep 1000) & echo $$; wait'


@pytest.fixture
async def terms(tmp_path: Path) -> AsyncIterator[TerminalManager]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BASE": "base"}
    async with TerminalManager(cwd=tmp_path, base_env=env, kill_grace_s=0.3) as manager:
        yield manager


def _p(terminal_id: str) -> dict[str, Any]:
    return {"sessionId": "s1", "terminalId": terminal_id}


async def _create(terms: TerminalManager, command: str, *args: str, **extra: Any) -> str:
    params: dict[str, Any] = {"sessionId": "s1", "command": command, "args": list(args), **extra}
    result = await terms.create(params)
    return str(result["terminalId"])


async def _output_until(
    terms: TerminalManager, tid: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            out = await terms.output(_p(tid))
            if done(out):
                return out
            await anyio.sleep(0.02)


async def _pgid_of(terms: TerminalManager, tid: str) -> int:
    out = await _output_until(terms, tid, lambda o: "\n" in o["output"])
    return int(out["output"].split()[0])


async def test_echo_output_and_exit_code(terms: TerminalManager) -> None:
    tid = await _create(terms, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert await terms.wait_for_exit(_p(tid)) == {"exitCode": 3}
    out = await terms.output(_p(tid))
    assert out == {"output": "out\nerr\n", "truncated": False, "exitStatus": {"exitCode": 3}}


async def test_shell_line_without_args(terms: TerminalManager) -> None:
    tid = await _create(terms, "echo one && echo two")
    await terms.wait_for_exit(_p(tid))
    assert (await terms.output(_p(tid)))["output"] == "one\ntwo\n"


async def test_env_and_cwd(terms: TerminalManager, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    tid = await _create(
        terms,
        "sh",
        "-c",
        'echo "$BASE $EXTRA"; pwd',
        env=[{"name": "EXTRA", "value": "extra"}],
        cwd=str(tmp_path / "sub"),
    )
    await terms.wait_for_exit(_p(tid))
    out = (await terms.output(_p(tid)))["output"]
    assert out == f"base extra\n{(tmp_path / 'sub').resolve()}\n"


async def test_cwd_outside_session_refused(terms: TerminalManager, tmp_path: Path) -> None:
    with pytest.raises(JsonRpcError) as err:
        await _create(terms, "true", cwd=str(tmp_path.parent))
    assert err.value.code == INVALID_PARAMS
    assert "outside" in err.value.message


async def test_missing_command_is_a_clear_error(terms: TerminalManager) -> None:
    with pytest.raises(JsonRpcError) as err:
        await _create(terms, "no-such-command-here-xyz")
    assert err.value.code == INVALID_PARAMS
    assert "no-such-command-here-xyz" in err.value.message


async def test_output_limit_keeps_the_tail_on_a_character_boundary(
    terms: TerminalManager,
) -> None:
    # 'a' then ten two-byte characters: 21 bytes. A 5-byte tail would start mid-character.
    code = "import sys; sys.stdout.buffer.write(('a' + 'é' * 10).encode())"
    tid = await _create(terms, sys.executable, "-c", code, outputByteLimit=5)
    await terms.wait_for_exit(_p(tid))
    out = await terms.output(_p(tid))
    assert out["output"] == "éé"
    assert out["truncated"] is True


async def test_signal_exit_status(terms: TerminalManager) -> None:
    tid = await _create(terms, "sh", "-c", "kill -TERM $$")
    assert await terms.wait_for_exit(_p(tid)) == {"signal": "SIGTERM"}


async def test_kill_keeps_the_terminal(terms: TerminalManager) -> None:
    tid = await _create(terms, "sh", "-c", "echo $$; exec sleep 1000")
    pgid = await _pgid_of(terms, tid)
    assert await terms.kill(_p(tid)) == {}
    assert not procgroup.group_alive(pgid)
    out = await terms.output(_p(tid))
    assert out["exitStatus"] == {"signal": "SIGTERM"}
    assert out["output"] == f"{pgid}\n"
    assert await terms.wait_for_exit(_p(tid)) == {"signal": "SIGTERM"}


async def test_kill_escalates_to_sigkill(terms: TerminalManager) -> None:
    tid = await _create(terms, "sh", "-c", STUBBORN)
    pgid = await _pgid_of(terms, tid)
    await terms.kill(_p(tid))
    assert not procgroup.group_alive(pgid)
    assert (await terms.wait_for_exit(_p(tid)))["signal"] in ("SIGTERM", "SIGKILL")


async def test_release_kills_and_forgets(terms: TerminalManager) -> None:
    tid = await _create(terms, "sh", "-c", STUBBORN)
    pgid = await _pgid_of(terms, tid)
    assert await terms.release(_p(tid)) == {}
    assert not procgroup.group_alive(pgid)
    with pytest.raises(JsonRpcError) as err:
        await terms.output(_p(tid))
    assert err.value.code == RESOURCE_NOT_FOUND
    assert terms.terminal_ids == []


async def test_wait_for_exit_answers_when_released(terms: TerminalManager) -> None:
    tid = await _create(terms, "sleep", "1000")
    results: list[dict[str, Any]] = []

    async def waiter() -> None:
        results.append(await terms.wait_for_exit(_p(tid)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await terms.release(_p(tid))
    assert results == [{"signal": "SIGTERM"}]


async def test_leaving_the_manager_kills_every_group(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    async with TerminalManager(cwd=tmp_path, base_env=env, kill_grace_s=0.3) as terms:
        tids = [await _create(terms, "sh", "-c", STUBBORN) for _ in range(2)]
        tids.append(await _create(terms, "sleep", "1000"))
        pgids = [await _pgid_of(terms, tid) for tid in tids[:2]]
    assert pgids and not any(procgroup.group_alive(pgid) for pgid in pgids)


async def test_unknown_terminal(terms: TerminalManager) -> None:
    for call in (terms.output, terms.wait_for_exit, terms.kill, terms.release):
        with pytest.raises(JsonRpcError) as err:
            await call(_p("term-nope"))
        assert err.value.code == RESOURCE_NOT_FOUND
        assert "term-nope" in err.value.message


async def test_max_terminals(tmp_path: Path) -> None:
    async with TerminalManager(cwd=tmp_path, base_env={}, max_terminals=1) as terms:
        await _create(terms, "/bin/sleep", "1000")
        with pytest.raises(JsonRpcError) as err:
            await _create(terms, "/bin/sleep", "1000")
        assert "too many terminals" in err.value.message


async def test_bad_params(terms: TerminalManager) -> None:
    with pytest.raises(JsonRpcError) as err:
        await terms.create({"sessionId": "s1"})
    assert err.value.code == INVALID_PARAMS
    assert "command" in err.value.message


def test_tail_buffer_cuts_on_character_starts() -> None:
    buf = TailBuffer(4)
    buf.write("a€".encode())  # 1 + 3 bytes: fits
    assert (buf.text(final=True), buf.truncated) == ("a€", False)
    buf.write(b"b")  # 5 bytes: dropping 'a' leaves "€b"
    assert (buf.text(final=True), buf.truncated) == ("€b", True)
    buf.write(b"c")  # dropping one byte would split '€': drop it whole
    assert buf.text(final=True) == "bc"


def test_tail_buffer_holds_back_an_unfinished_character() -> None:
    buf = TailBuffer(100)
    data = "x€".encode()
    buf.write(data[:2])
    assert buf.text(final=False) == "x"
    buf.write(data[2:])
    assert buf.text(final=False) == "x€"
