"""The pure parts of `--task` and of mode changes, as tables: what the control plane's
answer must hold (a hostile or broken one is refused with a reason, never half used), and
what the client's set_mode / set_config_option become for the viewer API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.tlsca import make_tls_files
from vm_agent.gateway import mapping as m
from vm_agent.gateway.control_plane import (
    TaskConnection,
    parse_connection,
    refusal_message,
    tls_context,
)
from vm_agent.gateway.link import LinkFailed
from vm_agent.jsonrpc.errors import JsonRpcError

GOOD = {
    "taskId": "t1",
    "sessionId": "s-1",
    "viewerUrl": "ws://127.0.0.1:8080/v1/ws",
    "tlsName": None,
    "caPem": None,
    "token": "eyJ.x.y",
    "expiresAt": 1.0,
}


def test_a_usable_answer_is_kept_as_given() -> None:
    assert parse_connection(GOOD) == TaskConnection(
        "s-1", "ws://127.0.0.1:8080/v1/ws", None, None, "eyJ.x.y"
    )


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, "answer is not usable"),
        ([GOOD], "answer is not usable"),
        ({**GOOD, "sessionId": ""}, "sessionId"),
        ({**GOOD, "token": None}, "token"),
        ({**GOOD, "viewerUrl": "http://127.0.0.1/v1/ws"}, "viewerUrl"),
        ({**GOOD, "viewerUrl": "file:///etc/passwd"}, "viewerUrl"),
        # TLS without the name and CA to check it against: never the system's CAs instead
        ({**GOOD, "viewerUrl": "wss://n1.example:8080/v1/ws"}, "without the TLS name and CA"),
        ({**GOOD, "viewerUrl": "wss://h/v1/ws", "tlsName": "n1", "caPem": None}, "TLS name"),
    ],
)
def test_an_answer_that_cannot_be_used_is_refused_with_a_reason(answer: Any, why: str) -> None:
    with pytest.raises(LinkFailed, match=why):
        parse_connection(answer)


def test_over_tls_only_the_given_ca_is_trusted(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    pem = files.ca_file.read_text()
    conn = parse_connection(
        {**GOOD, "viewerUrl": "wss://h:1/v1/ws", "tlsName": "n1.nodes", "caPem": pem}
    )
    ctx = tls_context(conn)
    assert ctx is not None and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # that CA alone, not the system's
    assert tls_context(parse_connection(GOOD)) is None
    with pytest.raises(LinkFailed, match="node CA is not usable"):
        tls_context(TaskConnection("s", "wss://h/v1/ws", "n", "not a pem", "t"))


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"error": "no such task"}, "the control plane refused (HTTP 404): no such task"),
        (409, {"error": "task has no session yet"}, "(HTTP 409): task has no session yet"),
        (401, None, "(HTTP 401): no reason given"),
        (403, ["x"], "(HTTP 403): no reason given"),
    ],
)
def test_what_a_refusal_says(status: int, body: Any, message: str) -> None:
    assert message in refusal_message(status, body)


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        (
            "session/set_mode",
            {"sessionId": "s", "modeId": "code"},
            ("s", {"session_id": "s", "mode_id": "code"}),
        ),
        (
            "session/set_config_option",
            {"sessionId": "s", "configId": "model", "value": "smart"},
            ("s", {"session_id": "s", "config_id": "model", "value": "smart"}),
        ),
        (
            "session/set_config_option",
            {"sessionId": "s", "configId": "fast", "type": "boolean", "value": True},
            ("s", {"session_id": "s", "config_id": "fast", "value": True}),
        ),
    ],
)
def test_what_a_change_becomes(method: str, params: Any, expected: Any) -> None:
    parse = m.parse_set_mode if method == "session/set_mode" else m.parse_set_config_option
    assert parse(params) == expected


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("session/set_mode", {"sessionId": "s"}),
        ("session/set_mode", {"modeId": "code"}),
        ("session/set_mode", "code"),
        ("session/set_config_option", {"sessionId": "s", "configId": "c"}),
        ("session/set_config_option", {"sessionId": "s", "configId": "c", "value": 3}),
        ("session/set_config_option", {"sessionId": "s", "configId": "c", "value": {"a": 1}}),
        (
            "session/set_config_option",
            {"sessionId": "s", "configId": "c", "type": "boolean", "value": "yes"},
        ),
    ],
)
def test_a_malformed_change_is_invalid_params(method: str, params: Any) -> None:
    parse = m.parse_set_mode if method == "session/set_mode" else m.parse_set_config_option
    with pytest.raises(JsonRpcError) as caught:
        parse(params)
    assert caught.value.code == -32602


@pytest.mark.parametrize(
    ("settings", "answer"),
    [
        (None, {}),
        ({}, {}),
        ({"modes": None, "configOptions": []}, {}),
        ({"modes": {"currentModeId": "a"}}, {"modes": {"currentModeId": "a"}}),
        ({"configOptions": [{"id": "m"}], "other": 1}, {"configOptions": [{"id": "m"}]}),
    ],
)
def test_what_the_client_is_told_the_agent_offered(settings: Any, answer: Any) -> None:
    assert m.offered(settings) == answer
