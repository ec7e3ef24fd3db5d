"""What a client's ACP call becomes on the viewer API, and what the daemon's answers become
for the client. Pure: no I/O, no clock; tested with tables in tests/gateway/test_mapping.py.

The client's ``sessionId`` is the daemon's session id (one id for one supervised session,
whichever agent process serves it now). Client params are checked with the
``agent-client-protocol`` models (a failure is -32602 naming the first problem); what is
passed on (prompt blocks, permission answers) stays as the client wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acp import schema

from vm_agent.jsonrpc.errors import (
    AUTH_REQUIRED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    RESOURCE_NOT_FOUND,
    JsonRpcError,
)
from vm_agent.jsonrpc.validation import parse_params

PROTOCOL_VERSION = 1
# The `_meta` key under which the gateway says what is vm-agent's own (ACP's extension point).
META = "vm-agent"
# Where the agent's tools act: on the VM, by the daemon, never through this client.
TOOLS_ON_VM = {
    "fs": "on the VM: the remote agent's fs/* calls are served by the daemon there",
    "terminal": "on the VM: the remote agent's terminal/* calls run there",
}


@dataclass(frozen=True, slots=True)
class NewArgs:
    cwd: str
    mcp_servers: int  # how many the client offered (they are not carried to the VM)


@dataclass(frozen=True, slots=True)
class LoadArgs:
    session_id: str
    cwd: str
    mcp_servers: int


@dataclass(frozen=True, slots=True)
class PromptArgs:
    session_id: str
    prompt: list[dict[str, Any]]


def _object(raw: Any, method: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise JsonRpcError(INVALID_PARAMS, f"invalid {method} params: params must be an object")
    return raw


def initialize_result(raw: Any, *, version: str, agent: str | None) -> dict[str, Any]:
    """The answer to ``initialize``: what the daemon and the gateway can really do.

    ``loadSession`` is true whatever the remote agent can do: the history comes from the
    daemon's durable log. Prompt content beyond ACP's baseline (text, resource links) is
    not promised, since which agent serves a session is known only once it exists. The
    client's ``fs``/``terminal`` capabilities are never used: the workspace is on the VM.
    """
    parse_params(schema.InitializeRequest, _object(raw, "initialize"), "initialize")
    title = "vm-agent gateway" + (f" ({agent})" if agent else "")
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "agentCapabilities": {
            "loadSession": True,
            "promptCapabilities": {"image": False, "audio": False, "embeddedContext": False},
            "mcpCapabilities": {"http": False, "sse": False},
            "sessionCapabilities": {"list": {}},
            "_meta": {META: {"tools": TOOLS_ON_VM, "clientCapabilitiesUsed": []}},
        },
        "authMethods": [],
        "agentInfo": {"name": "vm-agent-gateway", "title": title, "version": version},
    }


def parse_new(raw: Any) -> NewArgs:
    args = parse_params(schema.NewSessionRequest, _object(raw, "session/new"), "session/new")
    return NewArgs(cwd=args.cwd, mcp_servers=len(args.mcp_servers))


def start_params(
    *, agent: str, cwd_flag: str | None, client_cwd: str, session_id: str
) -> dict[str, Any]:
    """``session/start`` for a client's ``session/new``: ``--cwd`` (a directory on the VM)
    wins over the client's own cwd, which is used as is only when no ``--cwd`` was given
    (the daemon refuses it unless it lies under one of its workspace roots)."""
    return {"agent": agent, "cwd": cwd_flag or client_cwd, "session_id": session_id}


def start_failure(described: dict[str, Any]) -> JsonRpcError | None:
    """Why a session the daemon started cannot take prompts, as the ACP error for the
    client's ``session/new`` (None when it can)."""
    if described.get("state") != "error":
        return None
    reason = str(described.get("error") or "the agent could not be started")
    methods = described.get("auth_methods")
    if isinstance(methods, list):
        return JsonRpcError(AUTH_REQUIRED, reason, {"authMethods": methods})
    return JsonRpcError(INTERNAL_ERROR, reason)


def parse_load(raw: Any) -> LoadArgs:
    args = parse_params(schema.LoadSessionRequest, _object(raw, "session/load"), "session/load")
    return LoadArgs(session_id=args.session_id, cwd=args.cwd, mcp_servers=len(args.mcp_servers))


def find_session(listing: Any, session_id: str) -> dict[str, Any]:
    """The session's description from a ``session/list`` answer; -32002 when the token
    cannot see it (unknown, or another user's)."""
    sessions = listing.get("sessions") if isinstance(listing, dict) else None
    for s in sessions if isinstance(sessions, list) else []:
        if isinstance(s, dict) and s.get("session_id") == session_id:
            return s
    raise unknown_session(session_id)


def unknown_session(session_id: str) -> JsonRpcError:
    return JsonRpcError(RESOURCE_NOT_FOUND, f"unknown session {session_id!r}")


def parse_list(raw: Any) -> str | None:
    """The ``cwd`` filter of ``session/list`` (pagination: every session comes in one page)."""
    params = {} if raw is None else _object(raw, "session/list")
    return parse_params(schema.ListSessionsRequest, params, "session/list").cwd


def session_info(described: dict[str, Any]) -> dict[str, Any]:
    """ACP's ``SessionInfo`` for one of the daemon's session descriptions."""
    agent, state = described.get("agent"), described.get("state")
    return {
        "sessionId": described.get("session_id"),
        "cwd": described.get("cwd"),
        "title": f"{agent} ({state})",
        "_meta": {
            META: {
                k: described.get(k)
                for k in ("agent", "state", "owner", "head_seq", "acp_session_id")
            }
        },
    }


def list_result(listing: Any, cwd: str | None) -> dict[str, Any]:
    sessions = listing.get("sessions") if isinstance(listing, dict) else None
    infos = [
        session_info(s)
        for s in (sessions if isinstance(sessions, list) else [])
        if isinstance(s, dict) and (cwd is None or s.get("cwd") == cwd)
    ]
    return {"sessions": infos}


def parse_prompt(raw: Any) -> PromptArgs:
    params = _object(raw, "session/prompt")
    args = parse_params(schema.PromptRequest, params, "session/prompt")
    return PromptArgs(session_id=args.session_id, prompt=list(params["prompt"]))


def parse_cancel(raw: Any) -> str:
    params = _object(raw, "session/cancel")
    return parse_params(schema.CancelNotification, params, "session/cancel").session_id


def parse_set_mode(raw: Any) -> tuple[str, dict[str, Any]]:
    """The session and the viewer API's ``session/set_mode`` params."""
    params = _object(raw, "session/set_mode")
    args = parse_params(schema.SetSessionModeRequest, params, "session/set_mode")
    return args.session_id, {"session_id": args.session_id, "mode_id": args.mode_id}


def parse_set_config_option(raw: Any) -> tuple[str, dict[str, Any]]:
    """The session and the viewer API's ``session/set_config_option`` params (a boolean
    option's request says ``type: boolean``; a select option's value is an id)."""
    params = _object(raw, "session/set_config_option")
    method = "session/set_config_option"
    args: schema.SetSessionConfigOptionSelectRequest | schema.SetSessionConfigOptionBooleanRequest
    if params.get("type") == "boolean":
        if not isinstance(params.get("value"), bool):  # the model would take "yes" as true
            raise JsonRpcError(INVALID_PARAMS, f"invalid {method} params: value must be a boolean")
        args = parse_params(schema.SetSessionConfigOptionBooleanRequest, params, method)
    else:
        args = parse_params(schema.SetSessionConfigOptionSelectRequest, params, method)
    change = {"session_id": args.session_id, "config_id": args.config_id, "value": args.value}
    return args.session_id, change


def offered(settings: Any) -> dict[str, Any]:
    """What the remote agent offered for a session (``modes``, ``configOptions``, from the
    viewer API's ``session/settings``), for the client's session/new or session/load
    answer; nothing when it offered none."""
    if not isinstance(settings, dict):
        return {}
    return {k: settings[k] for k in ("modes", "configOptions") if settings.get(k)}


def prompt_answer(outcome: dict[str, Any], crash_report: dict[str, Any] | None) -> dict[str, Any]:
    """The ``session/prompt`` answer for the daemon's outcome (docs/outcomes.md), or the ACP
    error it raises. ``crash_report``: the last ``agent.crash_report`` of this prompt."""
    kind = outcome.get("outcome")
    meta: dict[str, Any] = {"outcome": kind}
    summary = _summary(crash_report)
    if summary is not None:
        meta["crashReport"] = summary
    if kind == "completed":
        return {"stopReason": outcome.get("stop_reason") or "end_turn", "_meta": {META: meta}}
    if kind == "cancelled":
        return {"stopReason": "cancelled", "_meta": {META: meta}}
    if kind == "recovered":
        # The agent died mid-turn and a new process took the session up again: the turn
        # ended (cut short, not replayed), and the session takes the next prompt.
        return {"stopReason": "end_turn", "_meta": {META: meta}}
    reason = str(outcome.get("reason") or kind)
    data: dict[str, Any] = {
        "outcome": outcome,
        **({"crashReport": crash_report} if crash_report else {}),
    }
    if kind == "crashed":
        text = summary or reason
        raise JsonRpcError(INTERNAL_ERROR, f"the agent crashed: {text}", data)
    if kind == "auth_required":
        data["authMethods"] = outcome.get("auth_methods") or []
        raise JsonRpcError(AUTH_REQUIRED, reason, data)
    if kind == "timeout":
        raise JsonRpcError(INTERNAL_ERROR, f"the prompt timed out: {reason}", data)
    code = outcome.get("error_code")
    # The agent's own error answer (failed) keeps its code, as a local agent's would.
    raise JsonRpcError(code if isinstance(code, int) else INTERNAL_ERROR, reason, data)


def _summary(crash_report: dict[str, Any] | None) -> str | None:
    if not crash_report:
        return None
    message = crash_report.get("message")
    return message if isinstance(message, str) and message else None


def permission_answer(session_id: str, request_id: str, client_result: Any) -> dict[str, Any]:
    """``permission/respond`` for the client's answer to ``session/request_permission``;
    anything but a selected option (an error, a malformed answer) is ``cancelled``."""
    params: dict[str, Any] = {"session_id": session_id, "request_id": request_id}
    outcome = client_result.get("outcome") if isinstance(client_result, dict) else None
    option = outcome.get("optionId") if isinstance(outcome, dict) else None
    if isinstance(outcome, dict) and outcome.get("outcome") == "selected" and option:
        params["option_id"] = str(option)
    else:
        params["cancelled"] = True
    return params
