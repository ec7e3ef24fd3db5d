"""Pure GitHub decisions: the App JWT's claims, repository names, what a workspace's token
may do, whether a user may use a repository. No I/O, no clock reads."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# GitHub: `iat` 60 s in the past against clock drift, `exp` at most 10 minutes after `iat`.
JWT_BACKDATE_S = 60
JWT_LIFE_S = 540

# A workspace's token is handed out again while it has at least this long to live (GitHub
# gives an hour): git asks for credentials on every fetch and push.
TOKEN_REUSE_MARGIN_S = 600
# At most this many workspaces' tokens are kept (per replica); the oldest go first.
TOKEN_CACHE_SIZE = 10_000

# What a workspace's installation token may do: push its branch, open its pull request.
WORKSPACE_PERMISSIONS: dict[str, str] = {"contents": "write", "pull_requests": "write"}
# What a node's git-token call may ask for (docs/callback-api.md): `read` for the agent's
# git (the credential helper), `write` for the daemon's own push of the task branch.
ACCESS_PERMISSIONS: dict[str, dict[str, str]] = {
    "read": {"contents": "read"},
    "write": WORKSPACE_PERMISSIONS,
}
# A task's branch: this prefix and the owner's task id, made a valid ref.
TASK_BRANCH_PREFIX = "vm-agent/"

# GitHub's rules: an owner is 1-39 of [A-Za-z0-9-], not starting with '-'; a repository
# name is 1-100 of [A-Za-z0-9._-], and neither '.' nor '..'.
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ID = re.compile(r"[1-9][0-9]{0,19}")
# A branch name git and GitHub both take (a strict subset of git check-ref-format).
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")


def app_jwt_claims(app_id: int, now: float) -> dict[str, int | str]:
    """The claims of the App's JWT at `now` (RS256-signed by the caller)."""
    issued = int(now) - JWT_BACKDATE_S
    return {"iat": issued, "exp": issued + JWT_BACKDATE_S + JWT_LIFE_S, "iss": str(app_id)}


def reusable(expires_at: float, now: float) -> bool:
    """Hand this token out again? Only while it has TOKEN_REUSE_MARGIN_S left."""
    return expires_at - now >= TOKEN_REUSE_MARGIN_S


@dataclass(frozen=True)
class RepositoryName:
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_repository(text: str) -> RepositoryName:
    """`owner/name` as GitHub allows it; ValueError with the reason otherwise."""
    owner, sep, name = text.partition("/")
    if not sep or not _OWNER.fullmatch(owner) or not _NAME.fullmatch(name):
        raise ValueError(f"not a GitHub repository 'owner/name': {text!r}")
    if name in (".", "..") or name.endswith(".git"):
        raise ValueError(f"not a GitHub repository name: {name!r}")
    return RepositoryName(owner, name)


def parse_installation_id(value: int | str) -> str:
    """GitHub's installation id: a positive integer, kept as its decimal text."""
    text = str(value)
    if isinstance(value, bool) or not _ID.fullmatch(text) or int(text) >= 2**63:
        raise ValueError(f"not a GitHub installation id: {text!r}")
    return text


@dataclass(frozen=True)
class LinkFacts:
    """One of the user's installation links, as the access decision needs it."""

    storage_id: str
    github_id: str
    proven: bool


@dataclass(frozen=True)
class AccessDecision:
    link: LinkFacts | None
    reason: str | None  # why not, when link is None


def repository_access(
    user_id: str,
    repository: str,
    holding_installation: str | None,
    links: Iterable[LinkFacts],
) -> AccessDecision:
    """May `user_id` have tokens for `repository`, held by GitHub installation
    `holding_installation` (None: the App is not installed there)? Only through a proven
    link of theirs to that very installation."""
    if holding_installation is None:
        return AccessDecision(
            None, f"the GitHub App is not installed on {repository} (or it does not exist)"
        )
    mine = [x for x in links if x.github_id == holding_installation]
    proven = [x for x in mine if x.proven]
    if proven:
        return AccessDecision(proven[0], None)
    if mine:
        return AccessDecision(
            None,
            f"user {user_id!r}'s link to GitHub installation {holding_installation} (which "
            f"holds {repository}) is not proven: link it again with a GitHub user token, or "
            "ask an admin to confirm it",
        )
    return AccessDecision(
        None,
        f"user {user_id!r} has no link to GitHub installation {holding_installation}, "
        f"which holds {repository}",
    )


@dataclass(frozen=True)
class GitTokenFacts:
    """What the git-token call decides on: the workspace as stored (None: unknown), and its
    repository grant (None: made without a repository)."""

    node_id: str | None
    active: bool
    repository: str | None
    link_proven: bool


def git_token_refusal(asking_node: str, facts: GitTokenFacts) -> tuple[int, str] | None:
    """Why a node may not have a token for this workspace's repository (status, reason),
    or None: only a node the workspace is placed on, while it is active, for the
    repository it was made for, through a link that is still proven."""
    if facts.node_id is None:
        return 404, "no such workspace"
    if facts.node_id != asking_node:
        return 403, "forbidden: the workspace is on another node"
    if not facts.active:
        return 403, "forbidden: the workspace is released"
    if facts.repository is None:
        return 404, "the workspace has no repository"
    if not facts.link_proven:
        return 403, "forbidden: the owner's GitHub link for this repository is gone or unproven"
    return None


def branch_refusal(name: str) -> str | None:
    """Why `name` is not a plain branch name git and GitHub both take, or None."""
    if (
        not _BRANCH.fullmatch(name)
        or ".." in name
        or "//" in name
        or name.endswith(("/", ".", ".lock"))
        or "/." in name
    ):
        return f"not a branch name: {name!r}"
    return None


def task_branch(task_id: str) -> str:
    """The branch of the owner's task `task_id`: `vm-agent/` and the id, made a valid ref
    (the id's `:` and `@` become `-`, no `..`, no leading `.`, no trailing `.lock`)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", task_id)
    name = re.sub(r"\.{2,}", ".", name).lstrip(".")
    while name.endswith((".", ".lock")):
        name = name.removesuffix(".lock").rstrip(".")
    branch = TASK_BRANCH_PREFIX + (name or "task")
    assert branch_refusal(branch) is None, branch
    return branch


def clone_url(git_url: str, repo: RepositoryName) -> str:
    """Where the node clones `repo` from: the git host's base URL and `/owner/name.git`."""
    return f"{git_url.rstrip('/')}/{repo.owner}/{repo.name}.git"


def bot_author(app_id: int, slug: str) -> tuple[str, str]:
    """The App's bot as a commit author (name, email), as GitHub shows its commits."""
    return f"{slug}[bot]", f"{app_id}+{slug}[bot]@users.noreply.github.com"


def pull_request_refusal(head: str, default_branch: str) -> str | None:
    """Why a task's pull request from `head` may not be opened, or None: the head must be
    a plain branch name, and never the repository's default branch (work comes back on a
    task branch, into the default one)."""
    if (why := branch_refusal(head)) is not None:
        return why
    if head == default_branch:
        return f"the head may not be the repository's default branch ({default_branch})"
    return None
