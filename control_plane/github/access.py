"""Which repository a user's task may reach, and through which of their links.

For the task submission (control_plane/api/tasks.py), before anything is placed or a
node asked for:

    grant = await access.repository_access(plane.engine, app, claims.sub, "owner/name")
    # RepositoryRefusedError(status, reason) -> answer `status` with `reason`
    ...
    with engine.begin() as conn:  # the transaction that inserts the workspace
        access.record_workspace_repository(conn, workspace_id, grant, now)

`app` is `control_plane.api.github.github_app_of(request)`. The node's git-token call
(control_plane/api/git_tokens.py) then mints tokens for that repository only.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy import Connection, Engine, insert, select, update

from control_plane.github import links as github_links
from control_plane.github import rules
from control_plane.github.app import GitHubApp, GitHubError, GitHubUnavailableError
from control_plane.github.pulls import PullRequest
from control_plane.storage.db import workspace_repositories as wr


class RepositoryRefusedError(Exception):
    """`status`: 422 a malformed name, 403 no proven link to the installation that holds
    the repository (or the App is not installed there), 502/503 GitHub failed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class RepositoryGrant:
    """A user's right to a repository: through which link, of which installation."""

    repository: str  # owner/name
    installation_id: str  # GitHub's (external) id
    link_storage_id: str
    user_id: str


def _facts(link: github_links.InstallationLink) -> rules.LinkFacts:
    return rules.LinkFacts(link.storage_id, link.github_id, link.proven)


async def repository_access(
    engine: Engine, app: GitHubApp, user_id: str, repository: str
) -> RepositoryGrant:
    """The grant for `user_id` to `repository`, or RepositoryRefusedError with the reason."""
    try:
        repo = rules.parse_repository(repository)
    except ValueError as exc:
        raise RepositoryRefusedError(422, str(exc)) from exc
    try:
        holder = await app.repository_installation(repo)
    except GitHubUnavailableError as exc:
        raise RepositoryRefusedError(503, f"GitHub is unavailable: {exc.message}") from exc
    except GitHubError as exc:
        raise RepositoryRefusedError(502, f"GitHub refused: {exc.message}") from exc
    links = await to_thread.run_sync(github_links.links_for_user, engine, user_id)
    decision = rules.repository_access(user_id, repo.full_name, holder, map(_facts, links))
    if decision.link is None:
        raise RepositoryRefusedError(403, decision.reason or "no access")
    assert holder is not None
    return RepositoryGrant(repo.full_name, holder, decision.link.storage_id, user_id)


def record_workspace_repository(
    conn: Connection,
    workspace_id: str,
    grant: RepositoryGrant,
    now: float,
    *,
    branch: str | None = None,
    base_branch: str | None = None,
    pull_request: bool = False,
) -> None:
    """Store the grant with its workspace, in the caller's transaction, with what the
    task asked: its branch, the base (None: the remote's default), a pull request."""
    conn.execute(
        insert(wr).values(
            workspace_id=workspace_id,
            repository=grant.repository,
            installation_id=grant.installation_id,
            link_storage_id=grant.link_storage_id,
            user_id=grant.user_id,
            created_at=now,
            branch=branch,
            base_branch=base_branch,
            pull_request_wanted=pull_request,
        )
    )


def branch_taken(conn: Connection, repository: str, branch: str) -> bool:
    """Another task's branch of the same name in the same repository (two owners may each
    have a task `fix-1`): the second would push over the first's."""
    found = conn.execute(
        select(wr.c.workspace_id).where(wr.c.repository == repository, wr.c.branch == branch)
    ).first()
    return found is not None


@dataclass(frozen=True)
class Delivery:
    """A task's repository as asked at submission and delivered at its end."""

    repository: str
    installation_id: str
    branch: str | None
    base_branch: str | None
    pull_request_wanted: bool
    pushed: bool | None  # None: no push recorded yet
    head_commit: str | None
    push_reason: str | None
    pull_request_url: str | None


def delivery_of(conn: Connection, workspace_id: str | None) -> Delivery | None:
    if workspace_id is None:
        return None
    row = conn.execute(select(wr).where(wr.c.workspace_id == workspace_id)).mappings().first()
    if row is None:
        return None
    return Delivery(
        row["repository"],
        row["installation_id"],
        row["branch"],
        row["base_branch"],
        bool(row["pull_request_wanted"]),
        row["pushed"],
        row["head_commit"],
        row["push_reason"],
        row["pull_request_url"],
    )


def record_push(
    engine: Engine,
    workspace_id: str,
    *,
    base_branch: str | None,
    head_commit: str | None,
    pushed: bool,
    reason: str | None,
    now: float,
) -> None:
    """The node's answer to `workspace/push`, once (a second record of the same push, by a
    replica that pushed again, changes nothing)."""
    with engine.begin() as conn:
        conn.execute(
            update(wr)
            .where(wr.c.workspace_id == workspace_id, wr.c.pushed.is_(None))
            .values(
                base_branch=base_branch,
                head_commit=head_commit,
                pushed=pushed,
                push_reason=reason,
                pushed_at=now,
            )
        )


def workspace_repository(engine: Engine, workspace_id: str) -> RepositoryGrant | None:
    with engine.connect() as conn:
        row = conn.execute(select(wr).where(wr.c.workspace_id == workspace_id)).mappings().first()
    if row is None:
        return None
    return RepositoryGrant(
        row["repository"], row["installation_id"], row["link_storage_id"], row["user_id"]
    )


def grant_still_holds(engine: Engine, grant: RepositoryGrant) -> bool:
    """The link the grant came through is still there, still the owner's and proven."""
    return any(
        x.storage_id == grant.link_storage_id and x.github_id == grant.installation_id and x.proven
        for x in github_links.links_for_user(engine, grant.user_id)
    )


def pull_request_of(engine: Engine, workspace_id: str) -> PullRequest | None:
    """The pull request recorded for the workspace's task, if one was opened."""
    with engine.connect() as conn:
        row = conn.execute(select(wr).where(wr.c.workspace_id == workspace_id)).mappings().first()
    if row is None or row["pull_request_number"] is None:
        return None
    return PullRequest(
        row["pull_request_number"],
        row["pull_request_url"],
        row["branch"],
        row["head_commit"],
        row["base_branch"],
    )


def record_pull_request(engine: Engine, workspace_id: str, pull: PullRequest) -> bool:
    """Keep the opened pull request with the workspace; False if one is there already."""
    with engine.begin() as conn:
        done = conn.execute(
            update(wr)
            .where(wr.c.workspace_id == workspace_id, wr.c.pull_request_number.is_(None))
            .values(
                branch=pull.head,
                base_branch=pull.base,
                head_commit=pull.head_sha,
                pull_request_number=pull.number,
                pull_request_url=pull.url,
            )
        )
        return done.rowcount == 1
