"""A task's work brought back (issue 23): the node's push of the task branch, then the pull
request through the GitHub App. `push_answer` (pure) checks what the node answered; the
two steps' shells are called by the dispatcher (loop.py) and are idempotent: the node's
push answers the same for the same head, and a pull request is found before it is made.
A refusal is a fact (`DeliveryFailed`: the task ends failed with the reason); a failure
to reach the node or GitHub is raised and the step is taken again on a later pass."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from sqlalchemy import Engine

from control_plane.dispatch import status as st
from control_plane.github import access, rules
from control_plane.github.app import GitHubError, GitHubUnavailableError
from control_plane.github.delivery import GitHubDelivery
from control_plane.github.pulls import PullRequest, default_branch, open_or_find_pull_request

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
TITLE_MAX = 120


@dataclass(frozen=True)
class Pushed:
    """The node's `workspace/push` answer, checked."""

    base_branch: str | None
    head_commit: str | None
    pushed: bool
    reason: str | None


def push_answer(answer: Any, task_branch: str | None) -> Pushed | str:
    """The node's answer, or why it is not one we take (the task then fails). Pure."""
    if not isinstance(answer, dict):
        return "the node's push answer is not an object"
    pushed, branch = answer.get("pushed"), answer.get("branch")
    base, head = answer.get("base_branch"), answer.get("head_commit")
    if not isinstance(pushed, bool):
        return "the node's push answer has no `pushed`"
    if branch != task_branch:
        return f"the node pushed {branch!r}, not the task's branch {task_branch!r}"
    if base is not None and (not isinstance(base, str) or rules.branch_refusal(base)):
        return f"the node's push answer names no base branch: {base!r}"
    if head is not None and (not isinstance(head, str) or not _SHA.fullmatch(head)):
        return f"the node's push answer has no commit id: {head!r}"
    if pushed and head is None:
        return "the node pushed without naming the head commit"
    reason = answer.get("reason")
    reason = str(reason)[:500] if reason is not None else None
    if not pushed and reason is None:
        reason = "nothing was pushed"
    return Pushed(base, head, pushed, reason)


def _title(prompt: list[dict[str, Any]] | None, branch: str) -> str:
    """The pull request's title: the first line of the task's first prompt, or its branch."""
    for block in prompt or []:
        text = block.get("text") if block.get("type") == "text" else None
        if isinstance(text, str) and text.strip():
            line = text.strip().splitlines()[0].strip()
            return line if len(line) <= TITLE_MAX else line[: TITLE_MAX - 1] + "…"
    return branch


async def open_pull_request(
    engine: Engine,
    github: GitHubDelivery | None,
    workspace_id: str,
    d: access.Delivery,
    *,
    prompt: list[dict[str, Any]] | None,
    before_record: Callable[[], None] = lambda: None,
) -> st.Fact | None:
    """Opens (or finds) the pushed branch's pull request and records it; None when done,
    a DeliveryFailed fact when it is refused. GitHub unreachable: raised (retried)."""
    branch = d.branch or ""
    if github is None or github.app is None:
        return st.DeliveryFailed(
            f"{branch} was pushed, but no GitHub App is configured to open its pull request"
        )
    grant = await to_thread.run_sync(access.workspace_repository, engine, workspace_id)
    if grant is None or not await to_thread.run_sync(access.grant_still_holds, engine, grant):
        return st.DeliveryFailed(
            f"{branch} was pushed, but the owner's GitHub link for {d.repository} is gone "
            "or unproven: no pull request"
        )
    app, repo = github.app, rules.parse_repository(d.repository)
    try:
        token = await app.workspace_token(workspace_id, d.installation_id, repo)
        base = d.base_branch or await default_branch(app.api, token, repo)
        if (why := rules.pull_request_refusal(branch, base)) is not None:
            return st.DeliveryFailed(f"no pull request: {why}")
        body = f"The work of a vm-agent task, on `{branch}` (head {d.head_commit})."
        pull: PullRequest = await open_or_find_pull_request(
            app.api, token, repo, head=branch, base=base, title=_title(prompt, branch), body=body
        )
    except GitHubUnavailableError:
        raise
    except GitHubError as exc:
        return st.DeliveryFailed(f"{branch} was pushed, but GitHub refused its pull request: {exc}")
    before_record()
    await to_thread.run_sync(access.record_pull_request, engine, workspace_id, pull)
    return None
