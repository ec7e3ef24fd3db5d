"""A session's task repository (issue 23): cloned before its first agent starts, kept with
the session in the registry, shown in ``describe()``. The git work is ``gitwork``'s."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vm_agent.gitwork.clone import prepare_clone
from vm_agent.gitwork.push import GitWork
from vm_agent.gitwork.run import GitFailed
from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.process.launch import Launcher, PlainLauncher

if TYPE_CHECKING:
    from vm_agent.session.session import AgentSession

log = logging.getLogger(__name__)


def repository_fields(spec: RepositorySpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    shown = spec.model_dump(mode="json", exclude={"author"})
    return {"repository": shown}


def kept_metadata(
    metadata: Mapping[str, Any],
) -> tuple[Any, str | None, RepositorySpec | None]:
    """A restored session's reservation, owner and repository, from its registry row."""
    owner = metadata.get("owner")
    kept = metadata.get("repository")
    repository = None if kept is None else RepositorySpec.model_validate(kept)
    return metadata.get("reservation"), owner if isinstance(owner, str) else None, repository


def agent_launch(session: AgentSession) -> tuple[Launcher, dict[str, str]]:
    """How git runs as the session's agent: its launcher and environment."""
    env = dict(session.config.daemon_env)
    if session.containment is None:
        return PlainLauncher(), env
    return session.containment, session.containment.env(env)


async def clone_before_start(
    session: AgentSession, spec: RepositorySpec | None, git: GitWork | None
) -> bool:
    """The task's repository in the workdir; False when that failed (the session is then
    in error with a reason naming the repository and what git said)."""
    if spec is None:
        return True
    try:
        if git is None:
            raise GitFailed(f"repository {spec.url}: this daemon has no git set up")
        launcher, env = agent_launch(session)
        await prepare_clone(spec, session.cwd, setup=git.setup, launcher=launcher, env=env)
    except (GitFailed, OSError) as exc:
        log.warning("session %s: %s", session.id, session.redactor.redact(str(exc)))
        await session.abandon(str(exc))
        return False
    return True
