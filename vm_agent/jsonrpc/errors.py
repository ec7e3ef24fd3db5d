"""JSON-RPC 2.0 error codes and the exception that carries one across the wire."""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REQUEST_CANCELLED = -32800
# ACP's own codes
AUTH_REQUIRED = -32000
RESOURCE_NOT_FOUND = -32002


class JsonRpcError(Exception):
    """An error answer: raised by a handler to answer with it, raised to a caller that got one."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC {code})")
        self.code = code
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err

    @classmethod
    def invalid_params(cls, message: str) -> JsonRpcError:
        return cls(INVALID_PARAMS, message)

    @classmethod
    def method_not_found(cls, method: str) -> JsonRpcError:
        return cls(METHOD_NOT_FOUND, f"method not found: {method}")
