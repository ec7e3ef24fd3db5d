"""What a node is told of a task's repository (the `repository` of `session/start`,
docs/viewer-api.md), and what the dispatcher needs to bring the work back: where git
clones from, who the commits are by, the App that opens the pull request."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from control_plane.github import rules
from control_plane.github.access import Delivery
from control_plane.github.app import AppKeyError, Clock, GitHubApp, app_from_settings
from control_plane.settings import ControlPlaneSettings

log = logging.getLogger("control_plane.github")


@dataclass(frozen=True)
class GitIdentity:
    git_url: str  # the git host's base URL: clones are `{git_url}/owner/name.git`
    author_name: str
    author_email: str


def git_identity(settings: ControlPlaneSettings) -> GitIdentity:
    """The settings' author, else the App's bot (its commits show as the App's)."""
    bot_name, bot_email = rules.bot_author(settings.github_app_id or 0, settings.github_app_slug)
    return GitIdentity(
        settings.github_git_url,
        settings.github_commit_author_name or bot_name,
        settings.github_commit_author_email or bot_email,
    )


def repository_params(identity: GitIdentity, workspace_id: str, d: Delivery) -> dict[str, Any]:
    """`session/start`'s `repository` object for the task's workspace."""
    return {
        "workspace_id": workspace_id,
        "url": rules.clone_url(identity.git_url, rules.parse_repository(d.repository)),
        "base_branch": d.base_branch,
        "task_branch": d.branch,
        "author": {"name": identity.author_name, "email": identity.author_email},
    }


@dataclass(frozen=True)
class GitHubDelivery:
    """The dispatcher's GitHub: the identity for nodes, and the App (None: none is
    configured, or it is misconfigured; a pull request then cannot be opened)."""

    identity: GitIdentity
    app: GitHubApp | None


def delivery_from_settings(settings: ControlPlaneSettings, clock: Clock) -> GitHubDelivery:
    try:
        app = app_from_settings(settings, clock)
    except AppKeyError as exc:
        log.error("the GitHub App is misconfigured (%s): no pull request can be opened", exc)
        app = None
    return GitHubDelivery(git_identity(settings), app)
