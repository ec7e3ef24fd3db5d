"""``session/request_permission``: policies that pick an option or ask someone and wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from vm_agent.acp.lazy import lazy_module
from vm_agent.jsonrpc.errors import INVALID_REQUEST, RESOURCE_NOT_FOUND, JsonRpcError
from vm_agent.jsonrpc.validation import parse_params

if TYPE_CHECKING:
    from acp import schema
else:
    schema = lazy_module("acp.schema")


def parse_permission_request(params: dict[str, Any]) -> schema.RequestPermissionRequest:
    return parse_params(schema.RequestPermissionRequest, params, "session/request_permission")


def selected(option_id: str) -> dict[str, Any]:
    """The ACP answer choosing ``option_id``."""
    answer = schema.RequestPermissionResponse(
        outcome=schema.AllowedOutcome(option_id=option_id, outcome="selected")
    )
    return answer.model_dump(by_alias=True, exclude_none=True)


def cancelled() -> dict[str, Any]:
    """The ACP answer for a request nobody decided (the prompt was cancelled)."""
    answer = schema.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))
    return answer.model_dump(by_alias=True, exclude_none=True)


def pick_option(options: Sequence[schema.PermissionOption], kinds: Sequence[str]) -> str | None:
    """The first option of the first kind in ``kinds`` that is offered, or None."""
    for kind in kinds:
        for option in options:
            if option.kind == kind:
                return option.option_id
    return None


class PermissionPolicy(Protocol):
    async def decide(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """The ACP result for one ``session/request_permission`` request."""
        ...


class AllowPolicy:
    """Allows once if it can, else always; cancelled when no allow option is offered."""

    async def decide(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_permission_request(params)
        option_id = pick_option(req.options, ("allow_once", "allow_always"))
        return cancelled() if option_id is None else selected(option_id)


class RejectPolicy:
    """Rejects once if it can, else always; cancelled when no reject option is offered."""

    async def decide(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_permission_request(params)
        option_id = pick_option(req.options, ("reject_once", "reject_always"))
        return cancelled() if option_id is None else selected(option_id)


@dataclass(eq=False)
class PendingPermission:
    """One request waiting for an answer from whoever was asked."""

    request_id: str
    params: dict[str, Any]
    options: list[schema.PermissionOption]
    answered: anyio.Event = field(default_factory=anyio.Event)
    result: dict[str, Any] | None = None

    def answer(self, result: dict[str, Any]) -> None:
        if self.result is None:
            self.result = result
            self.answered.set()


class AskPolicy:
    """Holds each request until ``respond`` (or ``cancel_all``) answers it.

    ``on_pending`` is called (synchronously) when a request starts waiting, so the owner
    can tell viewers; ``pending()`` lists what still waits.
    """

    def __init__(self, on_pending: Callable[[PendingPermission], None] | None = None) -> None:
        self._pending: dict[str, PendingPermission] = {}
        self._on_pending = on_pending

    async def decide(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        req = parse_permission_request(params)
        if request_id in self._pending:
            raise JsonRpcError(
                INVALID_REQUEST, f"permission request {request_id!r} is already pending"
            )
        entry = PendingPermission(request_id=request_id, params=params, options=list(req.options))
        self._pending[request_id] = entry
        try:
            if self._on_pending is not None:
                self._on_pending(entry)
            await entry.answered.wait()
        finally:
            # Also when the agent's request is cancelled while we wait.
            self._pending.pop(request_id, None)
        assert entry.result is not None
        return entry.result

    def pending(self) -> list[PendingPermission]:
        return list(self._pending.values())

    def respond(self, request_id: str, option_id: str | None, cancelled: bool = False) -> None:
        """Answers a pending request with ``option_id``, or with cancelled.

        Raises JsonRpcError RESOURCE_NOT_FOUND for an unknown request and INVALID_PARAMS
        for an option the request did not offer (or neither an option nor cancelled).
        """
        entry = self._pending.get(request_id)
        if entry is None:
            raise JsonRpcError(RESOURCE_NOT_FOUND, f"no pending permission request {request_id!r}")
        if cancelled:
            self._resolve(entry, _cancelled_result())
            return
        if option_id is None:
            raise JsonRpcError.invalid_params("give an option_id or cancelled=true")
        offered = [option.option_id for option in entry.options]
        if option_id not in offered:
            raise JsonRpcError.invalid_params(
                f"option {option_id!r} was not offered for request {request_id!r}; "
                f"offered: {', '.join(offered) or 'none'}"
            )
        self._resolve(entry, selected(option_id))

    def cancel_all(self) -> int:
        """Answers every pending request with cancelled; returns how many there were."""
        entries = list(self._pending.values())
        for entry in entries:
            self._resolve(entry, _cancelled_result())
        return len(entries)

    def _resolve(self, entry: PendingPermission, result: dict[str, Any]) -> None:
        # Answered means no longer pending, even before the waiting task wakes up.
        self._pending.pop(entry.request_id, None)
        entry.answer(result)


# ``respond`` has a parameter named ``cancelled``; this alias keeps the helper reachable.
_cancelled_result = cancelled
