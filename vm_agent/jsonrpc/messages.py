"""JSON-RPC 2.0 messages: parse raw frames into typed messages and encode ours. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vm_agent.jsonrpc import codec
from vm_agent.jsonrpc.errors import INVALID_REQUEST, PARSE_ERROR, JsonRpcError

RequestId = int | str


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class Response:
    id: RequestId
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    id: RequestId | None
    error: JsonRpcError


@dataclass(frozen=True, slots=True)
class Invalid:
    """A frame that is not a JSON-RPC message; ``id`` is set when one could be read."""

    error: JsonRpcError
    id: RequestId | None = None


Message = Request | Notification | Response | ErrorResponse
Parsed = Message | Invalid


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse(frame: bytes | str) -> Parsed:
    try:
        obj = codec.loads(frame)
    except ValueError as exc:  # UnicodeDecodeError is one
        return Invalid(JsonRpcError(PARSE_ERROR, f"parse error: {exc}"))
    return from_object(obj)


def from_object(obj: Any) -> Parsed:
    if not isinstance(obj, dict):
        return Invalid(JsonRpcError(INVALID_REQUEST, "a message must be a JSON object"))
    raw_id = obj.get("id")
    msg_id = raw_id if _valid_id(raw_id) else None
    if obj.get("jsonrpc") != "2.0":
        return Invalid(JsonRpcError(INVALID_REQUEST, 'missing "jsonrpc": "2.0"'), msg_id)
    method = obj.get("method")
    if method is not None:
        if not isinstance(method, str):
            return Invalid(JsonRpcError(INVALID_REQUEST, "method must be a string"), msg_id)
        params = obj.get("params")
        if params is not None and not isinstance(params, dict | list):
            return Invalid(JsonRpcError(INVALID_REQUEST, "params must be object or array"), msg_id)
        if "id" not in obj:
            return Notification(method, params)
        if msg_id is None:
            return Invalid(JsonRpcError(INVALID_REQUEST, "id must be a string or integer"))
        return Request(msg_id, method, params)
    if "result" in obj and msg_id is not None:
        return Response(msg_id, obj["result"])
    err = obj.get("error")
    if isinstance(err, dict) and isinstance(err.get("code"), int):
        message = err.get("message")
        return ErrorResponse(
            msg_id,
            JsonRpcError(err["code"], message if isinstance(message, str) else "", err.get("data")),
        )
    return Invalid(JsonRpcError(INVALID_REQUEST, "neither a request nor a response"), msg_id)


def _dumps(obj: dict[str, Any]) -> bytes:
    return codec.dumps(obj)


def encode_request(msg_id: RequestId, method: str, params: Any) -> bytes:
    obj: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        obj["params"] = params
    return _dumps(obj)


def encode_notification(method: str, params: Any) -> bytes:
    obj: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        obj["params"] = params
    return _dumps(obj)


def encode_result(msg_id: RequestId, result: Any) -> bytes:
    return _dumps({"jsonrpc": "2.0", "id": msg_id, "result": result})


def encode_error(msg_id: RequestId | None, error: JsonRpcError) -> bytes:
    return _dumps({"jsonrpc": "2.0", "id": msg_id, "error": error.to_wire()})
