"""Common behaviour: initialize, sessions, errors, echo, cancel, authenticate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_agent.harness import Agent, chunk_texts, clean_env, updates

pytestmark = pytest.mark.integration


def test_initialize_answers_capabilities() -> None:
    with Agent("--scenario", "echo") as agent:
        answer = agent.initialize()
        result = answer["result"]
        assert result["protocolVersion"] == 1
        caps = result["agentCapabilities"]
        assert caps["loadSession"] is True
        assert caps["promptCapabilities"] == {
            "image": False,
            "audio": False,
            "embeddedContext": True,
        }
        assert caps["sessionCapabilities"] == {}
        assert result["agentInfo"]["name"] == "fake-agent"
        assert result["authMethods"] == []


def test_echo_streams_chunks_then_end_turn_and_exits_0_on_eof(tmp_path: Path) -> None:
    with Agent("--scenario", "echo", "--chunks", "4") as agent:
        session_id = agent.start(str(tmp_path))
        assert session_id.startswith("fake-")
        seen, answer = agent.collect(agent.prompt(session_id, "hello, world!"))
        assert answer["result"] == {"stopReason": "end_turn"}
        assert updates(seen) == ["agent_message_chunk"] * 4
        assert "".join(chunk_texts(seen)) == "hello, world!"
        assert all(m["params"]["sessionId"] == session_id for m in seen)
        agent.close_stdin()
        assert agent.wait() == 0


def test_session_ids_are_unique(tmp_path: Path) -> None:
    with Agent("--scenario", "echo") as agent:
        agent.initialize()
        assert agent.new_session(str(tmp_path)) != agent.new_session(str(tmp_path))


def test_errors_unknown_method_bad_params_unknown_session(tmp_path: Path) -> None:
    with Agent("--scenario", "echo") as agent:
        agent.initialize()
        _, answer = agent.call("session/set_mode", {"sessionId": "x", "modeId": "y"})
        assert answer["error"]["code"] == -32601
        _, answer = agent.call("session/new", {"cwd": "relative/dir", "mcpServers": []})
        assert answer["error"]["code"] == -32602
        _, answer = agent.call("session/prompt", {"sessionId": "x"})
        assert answer["error"]["code"] == -32602
        _, answer = agent.call("session/prompt", {"sessionId": "fake-nope", "prompt": []})
        assert answer["error"]["code"] == -32002
        _, answer = agent.call(
            "session/load", {"sessionId": "fake-" + "0" * 32, "cwd": str(tmp_path)}
        )
        assert answer["error"]["code"] == -32002
        agent.send_raw(b"not json\n")
        assert agent.message()["error"]["code"] == -32700


def test_flags_come_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(FAKE_AGENT_SCENARIO="echo", FAKE_AGENT_CHUNKS="2")
    with Agent(env=env) as agent:
        session_id = agent.start(str(tmp_path))
        seen, _answer = agent.collect(agent.prompt(session_id, "abcd"))
        assert chunk_texts(seen) == ["ab", "cd"]


def test_bad_flags_exit_2_with_a_message() -> None:
    with Agent("--scenario", "no-such-scenario") as agent:
        assert agent.wait() == 2
        assert b"unknown scenario" in agent.stderr_complete()


def test_cancel_stops_a_slow_prompt(tmp_path: Path) -> None:
    # A long delay makes the cancel land between chunks whatever the machine's speed.
    with Agent("--scenario", "slow", "--delay-ms", "60000", "--chunks", "3") as agent:
        session_id = agent.start(str(tmp_path))
        request_id = agent.prompt(session_id, "abcdef")
        first = agent.message()
        assert chunk_texts([first]) == ["ab"]
        agent.notify("session/cancel", {"sessionId": session_id})
        seen, answer = agent.collect(request_id)
        assert seen == []
        assert answer["result"] == {"stopReason": "cancelled"}
        # The session stays usable, and a new prompt is not cancelled by the old cancel.
        request_id = agent.prompt(session_id, "xyz")
        assert chunk_texts([agent.message()]) == ["x"]
        agent.notify("session/cancel", {"sessionId": session_id})
        seen, answer = agent.collect(request_id)
        assert answer["result"] == {"stopReason": "cancelled"}


def test_slow_streams_everything_when_not_cancelled(tmp_path: Path) -> None:
    with Agent("--scenario", "slow", "--delay-ms", "10") as agent:
        session_id = agent.start(str(tmp_path))
        seen, answer = agent.collect(agent.prompt(session_id, "slowly"))
        assert chunk_texts(seen) == ["sl", "ow", "ly"]
        assert answer["result"]["stopReason"] == "end_turn"


def test_auth_required_until_authenticate(tmp_path: Path) -> None:
    with Agent("--scenario", "auth-required") as agent:
        result = agent.initialize()["result"]
        assert [m["id"] for m in result["authMethods"]] == ["fake-login"]
        session_id = agent.new_session(str(tmp_path))
        _, answer = agent.collect(agent.prompt(session_id, "hi"))
        assert answer["error"] == {"code": -32000, "message": "Authentication required"}
        _, answer = agent.call("authenticate", {"methodId": "wrong"})
        assert answer["error"]["code"] == -32602
        _, answer = agent.call("authenticate", {"methodId": "fake-login"})
        assert answer["result"] == {}
        seen, answer = agent.collect(agent.prompt(session_id, "hi"))
        assert "".join(chunk_texts(seen)) == "hi"
        assert answer["result"]["stopReason"] == "end_turn"


def test_stderr_text_is_written_at_each_prompt(tmp_path: Path) -> None:
    secret = "token=sk-live-0123456789"
    with Agent("--scenario", "echo", "--stderr-text", secret) as agent:
        session_id = agent.start(str(tmp_path))
        agent.collect(agent.prompt(session_id, "a"))
        agent.collect(agent.prompt(session_id, "b"))
        agent.close_stdin()
        assert agent.wait() == 0
        assert agent.stderr_complete().count(secret.encode()) == 2


def test_env_scenario_reports_the_environment(tmp_path: Path) -> None:
    import json

    env = clean_env(FAKE_AGENT_SCENARIO="env", SOME_MARKER="visible-value")
    with Agent(env=env) as agent:
        session_id = agent.start(str(tmp_path))
        seen, answer = agent.collect(agent.prompt(session_id, "env?"))
        (text,) = chunk_texts(seen)
        reported = json.loads(text)
        assert reported["SOME_MARKER"] == "visible-value"
        assert answer["result"]["stopReason"] == "end_turn"
