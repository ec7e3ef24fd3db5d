"""The viewer API's own JSON-RPC error codes (beside the standard ones)."""

from __future__ import annotations

from vm_agent.jsonrpc.errors import JsonRpcError

REFUSED = -32001  # the session cannot take this now (SessionRefused)
UNKNOWN_SESSION = -32002
FORBIDDEN = -32003  # the token's scope does not allow the method, or the session is not its
EVENTS_DROPPED = -32004  # retention dropped events a subscriber asked for


def unknown_session(session_id: str) -> JsonRpcError:
    return JsonRpcError(UNKNOWN_SESSION, f"unknown session {session_id!r}")


def refused(reason: str) -> JsonRpcError:
    return JsonRpcError(REFUSED, f"refused: {reason}")


def forbidden(why: str) -> JsonRpcError:
    return JsonRpcError(FORBIDDEN, why)
