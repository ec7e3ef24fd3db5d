"""``vm-agent task``: submit work to the control plane and follow it to its outcome.

``task run`` submits a task (agent, prompt, permission policy) and streams its events
(``GET /api/tasks/{id}/events/stream``, Server-Sent Events) until the task ends or waits
for a follow-up, resuming from the last event after a dropped connection; its exit code is
the outcome. The other verbs act on a task by id: show, follow, answer a permission, send
a follow-up, close, cancel. Contract: docs/control-plane.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from vm_agent.cli import task_settings
from vm_agent.cli.render import HumanRenderer
from vm_agent.cli.sse import SseDecoder

TOKEN_ENV = "VM_AGENT_USER_TOKEN"  # noqa: S105 - the variable's name, not a secret
URL_ENV = "VM_AGENT_CONTROL_PLANE_URL"
EXIT_OK, EXIT_OUTCOME, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
_RECONNECTS = 20  # a stream that keeps dropping: give up after this many in a row


class TaskCommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get(URL_ENV), help=f"control plane ({URL_ENV})")
    p.add_argument("--token", default=None, help=f"a user token (default: ${TOKEN_ENV})")
    p.add_argument("--ca-file", default=None, help="CA bundle for an https control plane")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    verbs = p.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="submit a task and follow it to its outcome")
    run.add_argument("prompt", help="the prompt (text)")
    run.add_argument("--agent", required=True, help="an agent of the node's catalog")
    run.add_argument("--permission", choices=["ask", "allow", "reject"], default=None)
    run.add_argument("--follow-ups", action="store_true", help="keep the session for more")
    run.add_argument("--task-id", default=None, help="idempotency key (default: a new one)")
    run.add_argument("--detach", action="store_true", help="submit, print the id, exit")
    run.add_argument("--repository", default=None, help="owner/name: the task works in it")
    run.add_argument("--base-branch", default=None, help="start from it (default: the default)")
    run.add_argument(
        "--pull-request", action="store_true", help="open a pull request of the pushed branch"
    )
    task_settings.add_arguments(run)
    for name, text in [
        ("show", "print a task's record"),
        ("follow", "stream a task's events until it ends"),
        ("cancel", "cancel a task"),
        ("close", "end a task waiting for a follow-up"),
    ]:
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("task_id")
        if name == "follow":
            verb.add_argument("--after", type=int, default=0, help="events after this seq")
    answer = verbs.add_parser("answer", help="answer a pending permission request")
    answer.add_argument("task_id")
    answer.add_argument("request_id")
    answer.add_argument("option_id")
    follow_up = verbs.add_parser("prompt", help="send a follow-up prompt and follow it")
    follow_up.add_argument("task_id")
    follow_up.add_argument("prompt")


class TaskClient:
    """The control plane's task API for one user token."""

    def __init__(self, url: str, token: str, ca_file: str | None = None) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=ca_file or True,
            timeout=httpx.Timeout(30.0, read=60.0),
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            answer = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TaskCommandError(f"control plane unreachable: {exc}", EXIT_UNREACHABLE) from exc
        if answer.status_code >= 400:
            raise TaskCommandError(f"{answer.status_code}: {_error_text(answer)}")
        if answer.status_code == 204:
            return {}  # no content: a delete
        result: dict[str, Any] = answer.json()
        return result

    def stream(self, task_id: str, after: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event name, data) until the task settles; reconnects from the last event id."""
        cursor, failures = after, 0
        while True:
            decoder = SseDecoder(last_event_id=str(cursor))
            try:
                with self.http.stream(
                    "GET",
                    f"/api/tasks/{task_id}/events/stream",
                    params={"after": cursor},
                    headers={"Accept": "text/event-stream", "Last-Event-ID": str(cursor)},
                    timeout=httpx.Timeout(30.0, read=None),
                ) as answer:
                    if answer.status_code >= 400:
                        answer.read()
                        raise TaskCommandError(f"{answer.status_code}: {_error_text(answer)}")
                    failures = 0
                    for line in answer.iter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        if event.id and event.id.isdigit():
                            cursor = int(event.id)
                        data = json.loads(event.data) if event.data else {}
                        yield event.event, data
                        if event.event == "end":
                            return
            except httpx.HTTPError as exc:
                failures += 1
                if failures > _RECONNECTS:
                    raise TaskCommandError(f"event stream lost: {exc}", EXIT_UNREACHABLE) from exc
            # The server closed the stream without an end (a replica restarting): resume.
            time.sleep(min(0.2 * 2**failures, 5.0))


def _error_text(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:500]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return json.dumps(body)[:500]


def repository_lines(view: dict[str, Any]) -> list[str]:
    """What came back of a task's repository, for people (nothing without one)."""
    if not view.get("repository"):
        return []
    where = f"   {view['repository']}: branch {view.get('branch')}"
    if view.get("baseBranch"):
        where += f" (from {view['baseBranch']})"
    lines = [where]
    if view.get("pushed") is True:
        lines.append(f"   pushed, head commit {view.get('headCommit')}")
    elif view.get("pushed") is False:
        lines.append(f"   nothing pushed: {view.get('pushReason') or 'no commits'}")
    if view.get("pullRequestUrl"):
        lines.append(f"   pull request: {view['pullRequestUrl']}")
    return lines


def usage_line(view: dict[str, Any]) -> str | None:
    """The task's token usage and cost, for people (None when the agent reported none)."""
    usage = view.get("usage")
    if not isinstance(usage, dict) or not usage:
        return None
    parts = []
    if isinstance(usage.get("totalTokens"), int):
        parts.append(f"{usage['totalTokens']} tokens")
    words = {"inputTokens": "in", "outputTokens": "out", "cachedReadTokens": "cached"}
    split = [f"{usage[k]} {w}" for k, w in words.items() if isinstance(usage.get(k), int)]
    if split:
        parts.append(f"({', '.join(split)})")
    cost = usage.get("cost")
    if isinstance(cost, dict):
        parts += [f"{amount:.6g} {currency}" for currency, amount in sorted(cost.items())]
    return "   usage: " + " ".join(parts) if parts else None


def exit_code_for(status: str | None) -> int:
    return EXIT_OK if status in ("completed", "awaiting_follow_up") else EXIT_OUTCOME


class Follower:
    """Prints a task's stream, and asks the person about permissions when it may."""

    def __init__(
        self, client: TaskClient, task_id: str, as_json: bool, policy: str | None = "ask"
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.as_json = as_json
        self.render = HumanRenderer()
        self.interactive = sys.stdin.isatty() and not as_json
        # only a task whose policy is to ask waits for a person's answer
        self.asks = policy in (None, "ask")

    def follow(self, after: int = 0) -> int:
        final: dict[str, Any] = {}
        for name, data in self.client.stream(self.task_id, after):
            if self.as_json:
                print(json.dumps({"event": name, "data": data}), flush=True)
            elif name == "status":
                self.render.line(f"-- task {data.get('status')}", to_err=True)
            elif name != "end":
                self.render.event(data)
            if self.asks and data.get("type") == "permission.requested":
                self._permission(data)
            if name == "end":
                final = data
        status = final.get("status")
        if not self.as_json:
            outcome = final.get("outcome") or {}
            reason = outcome.get("reason") or final.get("reason") or ""
            self.render.line(
                f"== task {self.task_id}: {status}" + (f"; {reason}" if reason else "")
            )
            for line in [*repository_lines(final), usage_line(final)]:
                if line:
                    self.render.line(line)
            if status == "awaiting_follow_up":
                self.render.line(
                    f"   follow up: vm-agent task prompt {self.task_id} '...';"
                    f" end it: vm-agent task close {self.task_id}"
                )
        return exit_code_for(status)

    def _permission(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        request_id = data.get("request_id") or data.get("requestId")
        options = (data.get("request") or {}).get("options") or data.get("options") or []
        if not request_id or not options:
            return
        ids = [str(o.get("optionId")) for o in options]
        if not self.interactive:
            self.render.line(
                f"   answer: vm-agent task answer {self.task_id} {request_id} <{'|'.join(ids)}>"
            )
            return
        choice = input(f"   choose {', '.join(ids)}: ").strip()
        if choice in ids:
            self.client.call(
                "POST", f"/api/tasks/{self.task_id}/permissions/{request_id}", {"optionId": choice}
            )


def run(args: argparse.Namespace) -> int:
    return run_with_client("vm-agent task", args, _verb)


def run_with_client(
    command: str, args: argparse.Namespace, verb: Callable[[TaskClient, argparse.Namespace], int]
) -> int:
    """A control-plane command's verb with its client (``--url``, ``--token`` or the
    environment); its errors said in one line with their exit code (``task``, ``secrets``)."""
    token = args.token or os.environ.get(TOKEN_ENV)
    if not args.url or not token:
        print(f"{command}: --url and --token (or ${URL_ENV}, ${TOKEN_ENV}) are needed",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    client = TaskClient(args.url, token, args.ca_file)
    try:
        return verb(client, args)
    except TaskCommandError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _verb(client: TaskClient, args: argparse.Namespace) -> int:
    if args.verb == "run":
        body: dict[str, Any] = {
            "taskId": args.task_id or f"task-{uuid.uuid4().hex[:12]}",
            "agent": args.agent,
            "prompt": args.prompt,
            "followUps": args.follow_ups,
        }
        if args.permission:
            body["permissionPolicy"] = args.permission
        if args.repository:
            body["repository"] = args.repository
            body["pullRequest"] = args.pull_request
            if args.base_branch:
                body["baseBranch"] = args.base_branch
        elif args.base_branch or args.pull_request:
            raise TaskCommandError("--base-branch and --pull-request need --repository")
        try:
            if (settings := task_settings.body_of(args)) is not None:
                body["agentSettings"] = settings
        except ValueError as exc:
            raise TaskCommandError(str(exc)) from None
        record = client.call("POST", "/api/tasks", body)
        task_id = str(record["taskId"])
        print(json.dumps(record) if args.json else f"task {task_id}: {record.get('status')}"
              f" (node {record.get('nodeId')}, session {record.get('sessionId')})",
              file=sys.stdout if args.json else sys.stderr, flush=True)  # fmt: skip
        if args.detach:
            return EXIT_OK
        policy = args.permission or record.get("permissionPolicy")  # what was asked for
        return Follower(client, task_id, args.json, policy).follow()
    task = args.task_id
    if args.verb == "show":
        view = client.call("GET", f"/api/tasks/{task}")
        print(json.dumps(view, indent=None if args.json else 2))
        if not args.json:  # its settings and what came back of its repository, in words
            for said in task_settings.lines(view):
                print(said, file=sys.stderr)
            for line in [*repository_lines(view), usage_line(view)]:
                if line:
                    print(line.strip(), file=sys.stderr)
        return EXIT_OK
    if args.verb == "follow":
        policy = client.call("GET", f"/api/tasks/{task}").get("permissionPolicy")
        return Follower(client, task, args.json, policy).follow(args.after)
    if args.verb == "answer":
        answered = client.call(
            "POST", f"/api/tasks/{task}/permissions/{args.request_id}", {"optionId": args.option_id}
        )
        print(json.dumps(answered) if args.json else f"task {task}: {args.request_id} answered "
              f"{args.option_id}")  # fmt: skip
        return EXIT_OK
    if args.verb == "prompt":
        # The cursor first: nothing the follow-up makes happens before it.
        current = client.call("GET", f"/api/tasks/{task}/events")
        client.call("POST", f"/api/tasks/{task}/prompts", {"prompt": args.prompt})
        policy = client.call("GET", f"/api/tasks/{task}").get("permissionPolicy")
        return Follower(client, task, args.json, policy).follow(int(current.get("next", 0)))
    if args.verb in ("cancel", "close"):
        record = client.call("POST", f"/api/tasks/{task}/{args.verb}")
        print(json.dumps(record) if args.json else f"task {task}: {record.get('status', 'ok')}")
        return EXIT_OK
    return EXIT_USAGE  # pragma: no cover - argparse enforces the choices
