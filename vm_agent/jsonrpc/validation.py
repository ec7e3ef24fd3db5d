"""Params validated with a pydantic model; a failure is a -32602 answer that says what is wrong."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vm_agent.jsonrpc.errors import JsonRpcError

M = TypeVar("M", bound=BaseModel)


def short_validation_message(exc: ValidationError) -> str:
    """The first problem of a pydantic error in one line, e.g. ``path: Field required``."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "params"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_params(model: type[M], params: Any, method: str) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise JsonRpcError.invalid_params(
            f"invalid {method} params: {short_validation_message(exc)}"
        ) from exc
