"""The gateway's pure mapping, as tables: client params in, daemon params out; daemon
outcomes in, ACP answers or errors out."""

from __future__ import annotations

from typing import Any

import pytest

from vm_agent.gateway import mapping as m
from vm_agent.jsonrpc.errors import JsonRpcError

SUMMARY = "The fake agent went away (exit code 1)."
REPORT = {"message": SUMMARY, "recovered": False}
KEYS = [{"id": "k"}]


@pytest.mark.parametrize(
    ("outcome", "report", "answer"),
    [
        (
            {"outcome": "completed", "stop_reason": "max_tokens"},
            None,
            {"stopReason": "max_tokens", "_meta": {"vm-agent": {"outcome": "completed"}}},
        ),
        (
            {"outcome": "completed"},
            None,
            {"stopReason": "end_turn", "_meta": {"vm-agent": {"outcome": "completed"}}},
        ),
        (
            {"outcome": "cancelled", "reason": "asked"},
            None,
            {"stopReason": "cancelled", "_meta": {"vm-agent": {"outcome": "cancelled"}}},
        ),
        (
            {"outcome": "recovered", "reason": "exit 1"},
            REPORT,
            {
                "stopReason": "end_turn",
                "_meta": {"vm-agent": {"outcome": "recovered", "crashReport": REPORT["message"]}},
            },
        ),
    ],
)
def test_outcomes_that_answer_the_prompt(
    outcome: dict[str, Any], report: dict[str, Any] | None, answer: dict[str, Any]
) -> None:
    assert m.prompt_answer(outcome, report) == answer


@pytest.mark.parametrize(
    ("outcome", "report", "code", "message"),
    [
        ({"outcome": "crashed", "reason": "r"}, REPORT, -32603, f"the agent crashed: {SUMMARY}"),
        ({"outcome": "crashed", "reason": "restart"}, None, -32603, "the agent crashed: restart"),
        ({"outcome": "timeout", "reason": "late"}, None, -32603, "the prompt timed out: late"),
        ({"outcome": "auth_required", "reason": "key", "auth_methods": KEYS}, None, -32000, "key"),
        ({"outcome": "failed", "reason": "bad", "error_code": -32602}, None, -32602, "bad"),
        ({"outcome": "failed", "reason": "boom"}, None, -32603, "boom"),
        ({"outcome": "something-new"}, None, -32603, "something-new"),
    ],
)  # fmt: skip
def test_outcomes_that_are_acp_errors(
    outcome: dict[str, Any], report: dict[str, Any] | None, code: int, message: str
) -> None:
    with pytest.raises(JsonRpcError) as caught:
        m.prompt_answer(outcome, report)
    assert (caught.value.code, caught.value.message) == (code, message)
    assert caught.value.data["outcome"] == outcome
    if report is not None:
        assert caught.value.data["crashReport"] == report
    if outcome["outcome"] == "auth_required":
        assert caught.value.data["authMethods"] == [{"id": "k"}]


@pytest.mark.parametrize(
    ("client_result", "expected"),
    [
        ({"outcome": {"outcome": "selected", "optionId": "allow"}}, {"option_id": "allow"}),
        ({"outcome": {"outcome": "cancelled"}}, {"cancelled": True}),
        ({"outcome": {"outcome": "selected"}}, {"cancelled": True}),
        ({"outcome": "selected"}, {"cancelled": True}),
        (None, {"cancelled": True}),  # the client answered with an error
        ([1], {"cancelled": True}),
    ],
)
def test_permission_answers(client_result: Any, expected: dict[str, Any]) -> None:
    params = m.permission_answer("s1", "perm-1", client_result)
    assert params == {"session_id": "s1", "request_id": "perm-1", **expected}


@pytest.mark.parametrize(
    ("cwd_flag", "client_cwd", "used"),
    [
        ("/srv/work", "/home/me/project", "/srv/work"),
        (None, "/home/me/project", "/home/me/project"),
    ],
)
def test_where_a_new_session_works(cwd_flag: str | None, client_cwd: str, used: str) -> None:
    params = m.start_params(agent="a", cwd_flag=cwd_flag, client_cwd=client_cwd, session_id="s")
    assert params == {"agent": "a", "cwd": used, "session_id": "s"}


@pytest.mark.parametrize(
    ("described", "code"),
    [
        ({"state": "ready"}, None),
        ({"state": "starting"}, None),
        ({"state": "error", "error": "no key", "auth_methods": [{"id": "k"}]}, -32000),
        ({"state": "error", "error": "exited at start"}, -32603),
    ],
)
def test_a_start_that_failed(described: dict[str, Any], code: int | None) -> None:
    failure = m.start_failure(described)
    assert (failure.code if failure else None) == code


@pytest.mark.parametrize(
    ("parse", "params"),
    [
        (m.parse_new, {"cwd": "/x"}),
        (m.parse_new, None),
        (m.parse_load, {"cwd": "/x", "mcpServers": []}),
        (m.parse_prompt, {"sessionId": "s", "prompt": [{"type": "nope"}]}),
        (m.parse_prompt, {"prompt": []}),
        (m.parse_cancel, {}),
        (m.parse_list, {"cursor": 3}),
    ],
)
def test_malformed_params_are_invalid_params(parse: Any, params: Any) -> None:
    with pytest.raises(JsonRpcError) as caught:
        parse(params)
    assert caught.value.code == -32602


def test_prompt_blocks_pass_on_as_the_client_wrote_them() -> None:
    block = {"type": "text", "text": "hi", "_meta": {"x": 1}, "annotations": {"priority": 1}}
    assert m.parse_prompt({"sessionId": "s", "prompt": [block]}).prompt == [block]


def test_list_and_initialize() -> None:
    listing = {
        "sessions": [
            {"session_id": "a", "cwd": "/w", "agent": "echo", "state": "ready", "head_seq": 4},
            {"session_id": "b", "cwd": "/v", "agent": "echo", "state": "stopped"},
        ]
    }
    assert [s["sessionId"] for s in m.list_result(listing, None)["sessions"]] == ["a", "b"]
    assert [s["sessionId"] for s in m.list_result(listing, "/v")["sessions"]] == ["b"]
    assert m.find_session(listing, "b")["state"] == "stopped"
    with pytest.raises(JsonRpcError) as caught:
        m.find_session(listing, "c")
    assert caught.value.code == -32002
    init = m.initialize_result({"protocolVersion": 1}, version="9", agent="echo")
    assert init["agentCapabilities"]["loadSession"] is True
    assert init["authMethods"] == []


def test_the_answers_are_valid_acp() -> None:
    """What the gateway answers passes the `agent-client-protocol` package's models."""
    from acp import schema

    init = m.initialize_result({"protocolVersion": 1}, version="1", agent=None)
    schema.InitializeResponse.model_validate(init)
    described = {"session_id": "a", "cwd": "/w", "agent": "echo", "state": "ready"}
    schema.ListSessionsResponse.model_validate(m.list_result({"sessions": [described]}, None))
    for outcome in ("completed", "cancelled", "recovered"):
        answer = m.prompt_answer({"outcome": outcome, "stop_reason": "end_turn"}, REPORT)
        schema.PromptResponse.model_validate(answer)
