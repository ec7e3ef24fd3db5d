"""One pydantic model per viewer method (docs/viewer-api.md); unknown fields are refused."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.validation import short_validation_message
from vm_agent.session.start_policy import StartPolicy, effective_reservation
from vm_agent.session.start_settings import StartSettings


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StartParams(_Params):
    agent: str = Field(min_length=1)
    cwd: str = Field(min_length=1)
    session_id: str | None = None
    # The control plane's reservation this session runs under (an id or the resolved
    # reservation object); kept with the session in the registry.
    reservation: str | dict[str, Any] | None = None
    acp_session_id: str | None = Field(default=None, min_length=1, max_length=256)
    # The user the session is for: the node scope only (the control plane starting it).
    owner: str | None = Field(default=None, min_length=1, max_length=256)
    # The task's repository, cloned before the agent starts: the node scope only.
    repository: RepositorySpec | None = None
    # The agent's MCP servers, mode, model, effort, options and extra env (camelCase as
    # ACP's names are): docs/viewer-api.md, *Agent settings at start*.
    agent_settings: StartSettings | None = Field(default=None, alias="agentSettings")

    @field_validator("reservation")
    @classmethod
    def _well_formed(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        # Its shape only (finite, whole, positive); the node's caps are the supervisor's.
        effective_reservation(value, None, StartPolicy())
        return value


class SessionParams(_Params):
    session_id: str = Field(min_length=1)


class PromptParams(SessionParams):
    prompt: list[dict[str, Any]] = Field(min_length=1)
    prompt_id: str = Field(min_length=1, max_length=200)

    @field_validator("prompt")
    @classmethod
    def _content_blocks(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, block in enumerate(value):
            if not isinstance(block.get("type"), str):
                raise ValueError(f"block {index} is not an ACP content block (no string 'type')")
        return value


class ListParams(_Params):
    pass


class SubscribeParams(SessionParams):
    after_seq: int = Field(default=0, ge=0)


class PermissionParams(SessionParams):
    request_id: str = Field(min_length=1)
    option_id: str | None = None
    cancelled: bool = False

    @model_validator(mode="after")
    def _one_answer(self) -> PermissionParams:
        if (self.option_id is None) == (not self.cancelled):
            raise ValueError("give exactly one of option_id or cancelled: true")
        return self


class AuthParams(_Params):
    token: str = Field(min_length=1)


P = TypeVar("P", bound=_Params)


def parse(model: type[P], method: str, params: Any) -> P:
    """Validates ``params`` or raises -32602 naming the first problem."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise JsonRpcError.invalid_params(f"{method}: params must be an object")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        message = short_validation_message(exc).replace("Value error, ", "")
        raise JsonRpcError.invalid_params(f"{method}: {message}") from None
