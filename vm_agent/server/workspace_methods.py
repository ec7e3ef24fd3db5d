"""``workspace/*``: a session's files and git view for its viewers (docs/viewer-api.md).

Read-only methods need the ``read`` scope, ``workspace/write`` the ``write`` scope, and
all of them a session the token reaches (``access``); the work itself is
``vm_agent.workspace``'s, as the session's agent user, beneath its directory.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.jsonrpc.validation import short_validation_message
from vm_agent.ports.scan import ports_of
from vm_agent.session.session import AgentSession
from vm_agent.workspace.files import MAX_ENTRIES, MAX_READ_BYTES, WorkspaceFiles
from vm_agent.workspace.git import WorkspaceGit

Handler = Callable[[Any], Awaitable[Any]]
Lookup = Callable[[str], AgentSession]

_PATH = "/usr/local/bin:/usr/bin:/bin"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    session_id: str = Field(min_length=1)


class PathParams(_Params):
    path: str = Field(default="", max_length=4096)


class ListParams(PathParams):
    limit: int = Field(default=MAX_ENTRIES, ge=1, le=MAX_ENTRIES)


class ReadParams(PathParams):
    offset: int = Field(default=0, ge=0)
    length: int = Field(default=MAX_READ_BYTES, ge=0, le=MAX_READ_BYTES)


class WriteParams(PathParams):
    content: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    make_dirs: bool = False


class StatusParams(_Params):
    pass


class DiffParams(_Params):
    base: str | None = Field(default=None, min_length=1, max_length=200)
    stat: bool = False


class LogParams(_Params):
    base: str | None = Field(default=None, min_length=1, max_length=200)
    max_count: int = Field(default=100, ge=1, le=1000)


M = TypeVar("M", bound=BaseModel)


def parse_params(model: type[M], method: str, params: Any) -> M:
    """As ``server.params.parse``: -32602 naming the first problem; unknown fields refused."""
    if not isinstance(params, dict):
        raise JsonRpcError.invalid_params(f"{method}: params must be an object")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        message = short_validation_message(exc).replace("Value error, ", "")
        raise JsonRpcError.invalid_params(f"{method}: {message}") from None


def files_of(session: AgentSession) -> WorkspaceFiles:
    contained = session.containment
    return WorkspaceFiles(
        session.cwd, credentials=contained.file_credentials if contained else None
    )


def git_of(session: AgentSession) -> WorkspaceGit:
    contained = session.containment
    env = {"PATH": os.environ.get("PATH", _PATH)}
    if contained is not None:
        env = contained.env(env)
    return WorkspaceGit(session.cwd, launcher=contained, env=env)


def handlers(lookup: Lookup) -> dict[str, Handler]:
    """The methods, for ``ViewerMethods``' table; ``lookup`` checks the token's reach."""

    async def list_(raw: Any) -> dict[str, Any]:
        args = parse_params(ListParams, "workspace/list", raw)
        return await files_of(lookup(args.session_id)).list(args.path, args.limit)

    async def stat(raw: Any) -> dict[str, Any]:
        args = parse_params(PathParams, "workspace/stat", raw)
        return await files_of(lookup(args.session_id)).stat(args.path)

    async def read(raw: Any) -> dict[str, Any]:
        args = parse_params(ReadParams, "workspace/read", raw)
        return await files_of(lookup(args.session_id)).read(args.path, args.offset, args.length)

    async def write(raw: Any) -> dict[str, Any]:
        args = parse_params(WriteParams, "workspace/write", raw)
        session = lookup(args.session_id)
        if args.encoding == "base64":
            try:
                data = base64.b64decode(args.content, validate=True)
            except (binascii.Error, ValueError):
                raise JsonRpcError.invalid_params(
                    "workspace/write: content is not base64"
                ) from None
        else:
            try:
                data = args.content.encode("utf-8")
            except UnicodeEncodeError:
                raise JsonRpcError.invalid_params(
                    "workspace/write: content is not valid Unicode (a lone surrogate)"
                ) from None
        return await files_of(session).write(args.path, data, make_dirs=args.make_dirs)

    async def git_status(raw: Any) -> dict[str, Any]:
        args = parse_params(StatusParams, "workspace/git_status", raw)
        return await git_of(lookup(args.session_id)).status()

    async def diff(raw: Any) -> dict[str, Any]:
        args = parse_params(DiffParams, "workspace/diff", raw)
        return await git_of(lookup(args.session_id)).diff(args.base, stat_only=args.stat)

    async def log(raw: Any) -> dict[str, Any]:
        args = parse_params(LogParams, "workspace/log", raw)
        return await git_of(lookup(args.session_id)).log(args.base, args.max_count)

    async def ports(raw: Any) -> dict[str, Any]:
        args = parse_params(StatusParams, "workspace/ports", raw)
        session = lookup(args.session_id)
        found, by = await anyio.to_thread.run_sync(ports_of, session.containment)
        return {"ports": found, "by": by}

    return {
        "workspace/ports": ports,
        "workspace/list": list_,
        "workspace/stat": stat,
        "workspace/read": read,
        "workspace/write": write,
        "workspace/git_status": git_status,
        "workspace/diff": diff,
        "workspace/log": log,
    }
