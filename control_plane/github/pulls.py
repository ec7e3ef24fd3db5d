"""Pull requests of a task's branch, through the workspace's installation token.

Opening is idempotent the way GitHub allows: the open pull request of the same head and
base is looked up first, so a retry after a lost answer records the one GitHub made.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.github.app import GitHubApi, GitHubError, InstallationToken, json_object
from control_plane.github.rules import RepositoryName


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str  # the page people open (GitHub's html_url)
    head: str
    head_sha: str
    base: str


async def default_branch(api: GitHubApi, token: InstallationToken, repo: RepositoryName) -> str:
    """The repository's default branch, as the installation token sees it."""
    response = await api.request("GET", f"/repos/{repo.owner}/{repo.name}", f"Bearer {token.token}")
    branch = json_object(response).get("default_branch")
    if not isinstance(branch, str) or not branch:
        raise GitHubError(0, f"GitHub did not say {repo.full_name}'s default branch")
    return branch


async def open_pull_request(
    api: GitHubApi,
    token: InstallationToken,
    repo: RepositoryName,
    *,
    head: str,
    base: str,
    title: str,
    body: str | None,
) -> PullRequest:
    """POST /repos/{owner}/{repo}/pulls with the installation token (pull_requests: write)."""
    response = await api.request(
        "POST",
        f"/repos/{repo.owner}/{repo.name}/pulls",
        f"Bearer {token.token}",
        json={"title": title, "head": head, "base": base, "body": body or ""},
    )
    return _pull(json_object(response, expect=201))


def _pull(made: object) -> PullRequest:
    if not isinstance(made, dict):
        raise GitHubError(0, "GitHub's pull request answer is not an object")
    try:
        head_info, base_info = made["head"], made["base"]
        return PullRequest(
            int(made["number"]),
            str(made["html_url"]),
            str(head_info["ref"]),
            str(head_info["sha"]),
            str(base_info["ref"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise GitHubError(0, "GitHub's pull request answer lacks number, html_url or refs") from exc


async def find_open_pull_request(
    api: GitHubApi, token: InstallationToken, repo: RepositoryName, *, head: str, base: str
) -> PullRequest | None:
    """The open pull request from `head` into `base`, if GitHub has one."""
    response = await api.request(
        "GET",
        f"/repos/{repo.owner}/{repo.name}/pulls",
        f"Bearer {token.token}",
        params={"head": f"{repo.owner}:{head}", "base": base, "state": "open"},
    )
    if response.status_code != 200:
        raise GitHubError(response.status_code, "GitHub refused the pull request list")
    try:
        found = response.json()
    except ValueError as exc:
        raise GitHubError(0, "GitHub's pull request list is not JSON") from exc
    if not isinstance(found, list):
        raise GitHubError(0, "GitHub's pull request list is not a list")
    for made in found:
        pull = _pull(made)
        if pull.head == head and pull.base == base:
            return pull
    return None


async def open_or_find_pull_request(
    api: GitHubApi,
    token: InstallationToken,
    repo: RepositoryName,
    *,
    head: str,
    base: str,
    title: str,
    body: str | None,
) -> PullRequest:
    """The open pull request from `head` into `base`: the one GitHub has, else a new one.
    Found before made, so a retry after a lost answer (or a replica that died before
    recording it) never opens a second."""
    found = await find_open_pull_request(api, token, repo, head=head, base=base)
    if found is not None:
        return found
    return await open_pull_request(api, token, repo, head=head, base=base, title=title, body=body)
