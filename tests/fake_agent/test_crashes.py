"""Crashes, exits and the recovery path: transcripts loaded by a new process."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.fake_agent.harness import Agent, Message, chunk_texts, updates

pytestmark = pytest.mark.integration


def load(agent: Agent, session_id: str, cwd: Path) -> tuple[list[Message], Message]:
    return agent.call("session/load", {"sessionId": session_id, "cwd": str(cwd), "mcpServers": []})


def crash_once(agent: Agent, cwd: Path, text: str) -> tuple[str, list[Message]]:
    """Prompt until stdout closes; the session id and what came before the crash."""
    session_id = agent.start(str(cwd))
    agent.prompt(session_id, text)
    seen: list[Message] = []
    while line := agent.line():
        seen.append(json.loads(line))
    return session_id, seen


@pytest.mark.parametrize(
    ("flags", "expected_exit"),
    [
        (("--scenario", "crash-mid-prompt"), 1),
        (("--scenario", "crash-mid-prompt", "--exit-code", "42", "--after-chunks", "3"), 42),
        (("--scenario", "sigkill-mid-prompt"), -signal.SIGKILL),
        (("--scenario", "no-load"), 1),
        (("--scenario", "crash-on-load"), 1),
    ],
)
def test_crash_mid_prompt(tmp_path: Path, flags: tuple[str, ...], expected_exit: int) -> None:
    after = int(flags[flags.index("--after-chunks") + 1]) if "--after-chunks" in flags else 2
    with Agent(*flags) as agent:
        _, seen = crash_once(agent, tmp_path, "abcdefghijkl")
        assert updates(seen) == ["agent_message_chunk"] * after
        assert not any("result" in m for m in seen)
        assert agent.wait() == expected_exit
        assert b"crashing mid-prompt" in agent.stderr_complete()


def test_no_load_does_not_advertise_or_answer_load(tmp_path: Path) -> None:
    with Agent("--scenario", "no-load") as agent:
        assert agent.initialize()["result"]["agentCapabilities"]["loadSession"] is False
        session_id = agent.new_session(str(tmp_path))
        _, answer = load(agent, session_id, tmp_path)
        assert answer["error"]["code"] == -32601


def test_exit_on_start(tmp_path: Path) -> None:
    with Agent("--scenario", "exit-on-start", "--exit-code", "7") as agent:
        assert agent.wait() == 7
        assert agent.line() == b""
        assert b"fake-agent: exiting on start" in agent.stderr_complete()


def test_load_replay_needs_a_state_dir() -> None:
    with Agent("--scenario", "load-replay") as agent:
        assert agent.wait() == 2
        assert b"--state-dir" in agent.stderr_complete()


@pytest.mark.slow
def test_a_new_process_loads_and_replays_the_transcript(tmp_path: Path) -> None:
    state = tmp_path / "state"
    flags = ("--scenario", "load-replay", "--state-dir", str(state), "--chunks", "2")
    with Agent(*flags) as first:
        session_id = first.start(str(tmp_path))
        first.collect(first.prompt(session_id, "one!"))
        first.collect(first.prompt(session_id, "two!"))
        first.close_stdin()
        assert first.wait() == 0
    with Agent(*flags) as second:
        second.initialize()
        seen, answer = load(second, session_id, tmp_path)
        assert answer["result"] == {}
        assert [(u, t) for u, t in zip(updates(seen), texts(seen), strict=True)] == [
            ("user_message_chunk", "one!"),
            ("agent_message_chunk", "on"),
            ("agent_message_chunk", "e!"),
            ("user_message_chunk", "two!"),
            ("agent_message_chunk", "tw"),
            ("agent_message_chunk", "o!"),
        ]
        assert all(m["params"]["sessionId"] == session_id for m in seen)
        # The loaded session takes prompts, and they extend the same transcript.
        seen, answer = second.collect(second.prompt(session_id, "3!"))
        assert answer["result"]["stopReason"] == "end_turn"
        _, answer = second.call("session/load", {"sessionId": "fake-" + "f" * 32, "cwd": "/"})
        assert answer["error"]["code"] == -32002
    with Agent(*flags) as third:
        third.initialize()
        seen, _ = load(third, session_id, tmp_path)
        assert chunk_texts(seen, "user_message_chunk") == ["one!", "two!", "3!"]


def texts(seen: list[Message]) -> list[str]:
    return [m["params"]["update"]["content"]["text"] for m in seen]


def test_in_memory_load_within_one_process(tmp_path: Path) -> None:
    with Agent("--scenario", "echo", "--chunks", "1") as agent:
        session_id = agent.start(str(tmp_path))
        agent.collect(agent.prompt(session_id, "remember me"))
        seen, answer = load(agent, session_id, tmp_path)
        assert texts(seen) == ["remember me", "remember me"]
        assert answer["result"] == {}


def test_crash_once_then_recover_with_a_new_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    flags = ("--scenario", "crash-mid-prompt", "--state-dir", str(state), "--once")
    with Agent(*flags) as first:
        session_id, seen = crash_once(first, tmp_path, "abcdef")
        assert chunk_texts(seen) == ["ab", "cd"]
        assert first.wait() == 1
    with Agent(*flags) as second:
        second.initialize()
        seen, answer = load(second, session_id, tmp_path)
        assert answer["result"] == {}
        assert texts(seen) == ["abcdef", "ab", "cd"]
        seen, answer = second.collect(second.prompt(session_id, "again!"))
        assert chunk_texts(seen) == ["ag", "ai", "n!"]
        assert answer["result"]["stopReason"] == "end_turn"


@pytest.mark.slow
def test_sigkill_keeps_what_was_streamed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    flags = ("--scenario", "sigkill-mid-prompt", "--state-dir", str(state), "--once")
    with Agent(*flags) as first:
        session_id, _ = crash_once(first, tmp_path, "abcdef")
        assert first.wait() == -signal.SIGKILL
    with Agent(*flags) as second:
        second.initialize()
        seen, answer = load(second, session_id, tmp_path)
        assert texts(seen) == ["abcdef", "ab", "cd"]
        assert answer["result"] == {}


@pytest.mark.slow
def test_crash_on_load(tmp_path: Path) -> None:
    state = tmp_path / "state"
    flags = ("--scenario", "crash-on-load", "--state-dir", str(state), "--once")
    with Agent(*flags) as first:
        assert first.initialize()["result"]["agentCapabilities"]["loadSession"] is True
        session_id, _ = crash_once(first, tmp_path, "abcdef")
        assert first.wait() == 1
    with Agent(*flags) as second:
        second.initialize()
        second.request(
            "session/load", {"sessionId": session_id, "cwd": str(tmp_path), "mcpServers": []}
        )
        assert second.line() == b""  # no replay, no answer: it died
        assert second.wait() == 3
    with Agent(*flags) as third:  # --once: the third process loads normally
        third.initialize()
        seen, answer = load(third, session_id, tmp_path)
        assert answer["result"] == {}
        assert texts(seen) == ["abcdef", "ab", "cd"]


def test_exit_on_start_once(tmp_path: Path) -> None:
    flags = ("--scenario", "exit-on-start", "--state-dir", str(tmp_path), "--once")
    with Agent(*flags) as first:
        assert first.wait() == 1
    with Agent(*flags) as second:
        session_id = second.start(str(tmp_path))
        _, answer = second.collect(second.prompt(session_id, "ok"))
        assert answer["result"]["stopReason"] == "end_turn"
