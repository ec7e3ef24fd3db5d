"""Output-shape scenarios: garbage, huge lines, floods, stderr, closed stdout, hangs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.fake_agent.harness import Agent, alive, chunk_texts
from vm_agent.fake_agent.scenarios import GARBAGE_LINES, flood_text
from vm_agent.fake_agent.turn import SENT_AT
from vm_agent.fake_agent.wire import encode

pytestmark = pytest.mark.integration


def test_garbage_lines_among_valid_messages(tmp_path: Path) -> None:
    with Agent("--scenario", "garbage-lines") as agent:
        banner = agent.line()
        with pytest.raises(ValueError):
            json.loads(banner)
        session_id = agent.start(str(tmp_path))
        request_id = agent.prompt(session_id, "abcdef")
        raw: list[bytes] = []
        while True:
            line = agent.line()
            raw.append(line)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("id") == request_id:
                break
        garbage = [line for line in raw if line in GARBAGE_LINES]
        assert garbage == list(GARBAGE_LINES)
        kinds = {type(json.loads(g)).__name__ for g in garbage[2:]}
        assert kinds == {"list", "str"}
        messages = [json.loads(line) for line in raw if line not in GARBAGE_LINES]
        assert chunk_texts(messages) == ["ab", "cd", "ef"]
        assert messages[-1]["result"] == {"stopReason": "end_turn"}


def test_huge_line(tmp_path: Path) -> None:
    with Agent("--scenario", "huge-line", "--line-mb", "3") as agent:
        session_id = agent.start(str(tmp_path))
        request_id = agent.prompt(session_id, "big")
        line = agent.line()
        assert len(line) > 3 * 1024 * 1024
        (text,) = chunk_texts([json.loads(line)])
        assert len(text) == 3 * 1024 * 1024
        assert agent.message() == {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"stopReason": "end_turn"},
        }


@pytest.mark.slow
def test_flood(tmp_path: Path) -> None:
    with Agent("--scenario", "flood", "--count", "20000", "--size", "50") as agent:
        session_id = agent.start(str(tmp_path))
        seen, answer = agent.collect(agent.prompt(session_id, "go"))
        texts = chunk_texts(seen)
        assert len(texts) == 20000
        assert texts[0] == flood_text(0, 50)
        assert texts[-1] == flood_text(19999, 50)
        assert all(len(t) == 50 for t in texts)
        assert answer["result"] == {"stopReason": "end_turn"}


def test_flood_text_is_exactly_sized() -> None:
    assert flood_text(3, 12) == "00000003 xxx"
    assert flood_text(3, 4) == "0000"
    assert encode({"a": "é"}) == '{"a":"é"}\n'.encode()


def test_stderr_flood_writes_the_whole_amount(tmp_path: Path) -> None:
    amount = 300_000  # several pipe buffers: the harness must drain it
    with Agent("--scenario", "stderr-flood", "--stderr-bytes", str(amount)) as agent:
        session_id = agent.start(str(tmp_path))
        seen, answer = agent.collect(agent.prompt(session_id, "abc"))
        assert chunk_texts(seen) == ["a", "b", "c"]
        assert answer["result"]["stopReason"] == "end_turn"
        agent.close_stdin()
        assert agent.wait() == 0
        assert len(agent.stderr_complete()) == amount


def test_close_stdout_keeps_running_until_stdin_eof(tmp_path: Path) -> None:
    with Agent("--scenario", "close-stdout") as agent:
        session_id = agent.start(str(tmp_path))
        agent.prompt(session_id, "bye")
        assert chunk_texts([agent.message()]) == ["bye"]
        assert agent.line() == b""  # stdout closed, no answer
        assert agent.proc.poll() is None
        agent.close_stdin()
        assert agent.wait() == 0


@pytest.mark.slow
def test_hang_never_answers_ignores_cancel_and_eof(tmp_path: Path) -> None:
    with Agent("--scenario", "hang") as agent:
        session_id = agent.start(str(tmp_path))
        agent.prompt(session_id, "anyone?")
        agent.notify("session/cancel", {"sessionId": session_id})
        agent.close_stdin()
        # No timing assertion: only that nothing arrives while we look, and it still runs.
        assert agent.no_line_within(0.5)
        assert agent.proc.poll() is None
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.wait() == -signal.SIGTERM


@pytest.mark.slow
def test_ignore_cancel_keeps_streaming_and_dies_on_sigterm(tmp_path: Path) -> None:
    with Agent("--scenario", "ignore-cancel", "--delay-ms", "5") as agent:
        session_id = agent.start(str(tmp_path))
        agent.prompt(session_id, "go")
        agent.message()
        agent.notify("session/cancel", {"sessionId": session_id})
        for _ in range(20):  # well past the cancel, still only chunks
            message = agent.message()
            assert message["method"] == "session/update"
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.wait() == -signal.SIGTERM


def read_pids(path: Path) -> list[int]:
    for _ in range(200):
        if path.exists():
            return [int(line) for line in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("pid file never appeared")


@pytest.mark.slow
def test_spawns_children_in_its_own_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    flags = ("--scenario", "spawns-children", "--children", "3", "--pid-file", str(pid_file))
    with Agent(*flags) as agent:
        session_id = agent.start(str(tmp_path))  # pid file is written before serving
        pids = read_pids(pid_file)
        assert len(pids) == 3
        for pid in pids:
            assert alive(pid)
            assert os.getpgid(pid) == agent.pgid
            assert f"pid {pid}".encode() in agent.stderr
        seen, answer = agent.collect(agent.prompt(session_id, "abc"))
        assert chunk_texts(seen) == ["a", "b", "c"]
        assert answer["result"]["stopReason"] == "end_turn"
        # SIGTERM reaches the whole group and is ignored by all of it.
        os.killpg(agent.pgid, signal.SIGTERM)
        assert agent.no_line_within(0.3)
        assert agent.proc.poll() is None
        assert all(alive(pid) for pid in pids)
        os.killpg(agent.pgid, signal.SIGKILL)
        assert agent.wait() == -signal.SIGKILL
        for pid in pids:
            for _ in range(200):
                if not alive(pid):
                    break
                time.sleep(0.05)
            assert not alive(pid)


def test_timestamps_put_the_send_time_in_each_updates_meta(tmp_path: Path) -> None:
    with Agent("--scenario", "echo", "--chunks", "3", "--timestamps") as agent:
        session_id = agent.start(str(tmp_path))
        before = time.time()
        updates, answer = agent.call(
            "session/prompt",
            {"sessionId": session_id, "prompt": [{"type": "text", "text": "abcdef"}]},
        )
        after = time.time()
        assert answer["result"] == {"stopReason": "end_turn"}
        assert chunk_texts(updates) == ["ab", "cd", "ef"]
        stamps = [u["params"]["update"]["_meta"][SENT_AT] for u in updates]
        assert len(stamps) == 3
        assert before <= stamps[0] <= stamps[1] <= stamps[2] <= after
