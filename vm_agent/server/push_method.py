"""``workspace/push`` (node scope only, docs/viewer-api.md): the session's task branch to
its repository, carried out by ``gitwork.push``; refusals are JSON-RPC errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from vm_agent.gitwork.push import PushRefused
from vm_agent.gitwork.run import GitFailed
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.server import errors
from vm_agent.server import params as p
from vm_agent.session.repository import agent_launch
from vm_agent.session.session import AgentSession
from vm_agent.session.supervisor import Supervisor

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]
PUSH_FAILED = -32005  # git could not read the branch, or the remote refused it


def handlers(lookup: Callable[[str], AgentSession], supervisor: Supervisor) -> dict[str, Handler]:
    async def push(raw: Any) -> dict[str, Any]:
        args = p.parse(p.SessionParams, "workspace/push", raw)
        session = lookup(args.session_id)
        spec = session.repository
        if spec is None:
            raise JsonRpcError.invalid_params(
                f"workspace/push: session {args.session_id!r} has no repository"
            )
        git = supervisor.config.git
        if git is None:
            raise errors.refused("this daemon has no git set up")
        launcher, env = agent_launch(session)
        try:
            with anyio.CancelScope(shield=True):  # a push is not left half done
                answer = await git.pusher.push(
                    session.id, spec, session.cwd, launcher=launcher, env=env
                )
        except PushRefused as exc:
            raise errors.refused(str(exc)) from None
        except (GitFailed, OSError) as exc:
            reason = session.redactor.redact(str(exc))
            log.warning("session %s: workspace/push: %s", session.id, reason)
            raise JsonRpcError(PUSH_FAILED, f"workspace/push: {reason}") from None
        return answer

    return {"workspace/push": push}
