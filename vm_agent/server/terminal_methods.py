"""``terminal/*``: people's terminals in a session's workspace (docs/viewer-api.md).

Opening, typing, resizing and closing need the ``write`` scope; listing and the screen
snapshot ``read``; all of them a session the token reaches. The terminals belong to the
server's task group (they outlive the viewer that opened them) and end with their session.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.validation import short_validation_message
from vm_agent.server import errors
from vm_agent.session.session import AgentSession
from vm_agent.session.supervisor import Supervisor
from vm_agent.terminals.registry import TerminalRefused, TerminalRegistry, Where

if TYPE_CHECKING:
    from vm_agent.server.methods import ViewerContext

Handler = Callable[[Any], Awaitable[Any]]
Lookup = Callable[[str], AgentSession]

# One registry per supervisor (one daemon): every viewer of a session sees its terminals.
_registries: weakref.WeakKeyDictionary[Supervisor, TerminalRegistry] = weakref.WeakKeyDictionary()


def registry_of(supervisor: Supervisor) -> TerminalRegistry:
    found = _registries.get(supervisor)
    if found is None:
        found = _registries[supervisor] = TerminalRegistry(supervisor.log)
    return found


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    session_id: str = Field(min_length=1)


class OpenParams(_Params):
    cols: int = Field(default=80, ge=2, le=1000)
    rows: int = Field(default=24, ge=2, le=1000)


class TerminalParams(_Params):
    terminal_id: str = Field(min_length=1, max_length=64)


class InputParams(TerminalParams):
    data: str = Field(max_length=64 * 1024)


class ResizeParams(TerminalParams):
    cols: int = Field(ge=2, le=1000)
    rows: int = Field(ge=2, le=1000)


M = TypeVar("M", bound=_Params)


def _parse(model: type[M], method: str, params: Any) -> M:
    if not isinstance(params, dict):
        raise JsonRpcError.invalid_params(f"{method}: params must be an object")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        message = short_validation_message(exc).replace("Value error, ", "")
        raise JsonRpcError.invalid_params(f"{method}: {message}") from None


def where_of(session: AgentSession) -> Where:
    contained = session.containment
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if contained is not None:
        env = contained.env(env)
    elif "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return Where(
        session_id=session.id,
        cwd=session.cwd,
        launcher=contained,
        env=env,
        owner_ids=contained.file_credentials if contained else None,
        stopped=session.stopped_for_good,
    )


def handlers(lookup: Lookup, ctx: ViewerContext) -> dict[str, Handler]:
    registry = registry_of(ctx.supervisor)

    def refused(exc: Exception) -> JsonRpcError:
        return errors.refused(str(exc))

    async def open_(raw: Any) -> dict[str, Any]:
        args = _parse(OpenParams, "terminal/open", raw)
        session = lookup(args.session_id)
        try:
            term = await registry.open(
                ctx.server_tg,
                where_of(session),
                cols=args.cols,
                rows=args.rows,
                opened_by=ctx.identity.subject,
            )
        except TerminalRefused as exc:
            raise refused(exc) from None
        return await term.snapshot()

    async def input_(raw: Any) -> dict[str, Any]:
        args = _parse(InputParams, "terminal/input", raw)
        lookup(args.session_id)
        try:
            data = args.data.encode("utf-8")
            await registry.get(args.session_id, args.terminal_id).write(data)
        except UnicodeEncodeError:
            raise JsonRpcError.invalid_params("terminal/input: data is not valid Unicode") from None
        except (TerminalRefused, ValueError, TimeoutError) as exc:
            raise refused(exc) from None
        return {}

    async def resize(raw: Any) -> dict[str, Any]:
        args = _parse(ResizeParams, "terminal/resize", raw)
        lookup(args.session_id)
        try:
            await registry.get(args.session_id, args.terminal_id).resize(args.cols, args.rows)
        except (TerminalRefused, ValueError) as exc:
            raise refused(exc) from None
        return {}

    async def close(raw: Any) -> dict[str, Any]:
        args = _parse(TerminalParams, "terminal/close", raw)
        lookup(args.session_id)
        try:
            term = registry.get(args.session_id, args.terminal_id)
        except TerminalRefused as exc:
            raise refused(exc) from None
        await term.close()
        return {"exit": term.exit}

    async def list_(raw: Any) -> dict[str, Any]:
        args = _parse(_Params, "terminal/list", raw)
        lookup(args.session_id)
        return {"terminals": registry.describe(args.session_id)}

    async def snapshot(raw: Any) -> dict[str, Any]:
        args = _parse(TerminalParams, "terminal/snapshot", raw)
        lookup(args.session_id)
        try:
            term = registry.get(args.session_id, args.terminal_id)
        except TerminalRefused as exc:
            raise refused(exc) from None
        return await term.snapshot()

    return {
        "terminal/open": open_,
        "terminal/input": input_,
        "terminal/resize": resize,
        "terminal/close": close,
        "terminal/list": list_,
        "terminal/snapshot": snapshot,
    }
