"""What the GitHub stand-in knows: the App, installations, repositories, tokens, calls."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

LEVELS = {"read": 1, "write": 2, "admin": 3}
TOKEN_LIFE_S = 3600  # GitHub: installation tokens expire one hour after they are made
APP_JWT_MAX_S = 600  # GitHub: `exp` at most ten minutes after `iat`


class StandInError(Exception):
    """Answered as GitHub answers errors: `{"message": ...}` with the status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Repository:
    id: int
    owner: str
    name: str
    installation_id: int
    path: Path
    default_branch: str = "main"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def to_api(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "node_id": f"R_{self.id}",
            "name": self.name,
            "full_name": self.full_name,
            "owner": {"login": self.owner, "type": "Organization"},
            "private": True,
            "default_branch": self.default_branch,
            "clone_url": f"{base_url}/{self.full_name}.git",
            "url": f"{base_url}/repos/{self.full_name}",
        }


@dataclass
class Installation:
    id: int
    account_login: str
    account_type: str = "Organization"
    # What the App was granted on this installation.
    permissions: dict[str, str] = field(
        default_factory=lambda: {"contents": "write", "pull_requests": "write", "metadata": "read"}
    )

    def to_api(self, app_id: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": {"login": self.account_login, "id": self.id * 10, "type": self.account_type},
            "app_id": app_id,
            "target_type": self.account_type,
            "repository_selection": "selected",
            "permissions": dict(self.permissions),
        }


@dataclass(frozen=True)
class InstallationToken:
    token: str
    installation_id: int
    repository_ids: frozenset[int]
    permissions: dict[str, str]
    expires_at: float

    def allows(self, repo: Repository, permission: str, level: str, now: float) -> bool:
        held = self.permissions.get(permission)
        return (
            now < self.expires_at
            and repo.id in self.repository_ids
            and held is not None
            and LEVELS[held] >= LEVELS[level]
        )


@dataclass(frozen=True)
class UserToken:
    """A user access token from the App's OAuth flow: who, and which installations they reach."""

    token: str
    login: str
    installation_ids: tuple[int, ...]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    auth: str  # "app-jwt", "installation", "user", "basic", "none", "bad"
    status: int


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd or Path.cwd()),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Stand-in",
        "GIT_AUTHOR_EMAIL": "standin@example.invalid",
        "GIT_COMMITTER_NAME": "Stand-in",
        "GIT_COMMITTER_EMAIL": "standin@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


PRE_RECEIVE = """#!/bin/sh
# The stand-in's branch protection: a push may not update a protected branch.
while read old new ref; do
  for protected in {protected}; do
    if [ "$ref" = "refs/heads/$protected" ]; then
      echo "error: GH006: Protected branch update failed for $ref." >&2
      exit 1
    fi
  done
done
exit 0
"""


class GitHubStandIn:
    """The state behind the stand-in's app; tests set it up and read its record."""

    def __init__(
        self,
        root: Path,
        app_id: int,
        app_public_key: RSAPublicKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.clock = clock
        self.base_url = ""  # set once served
        self.installations: dict[int, Installation] = {}
        self.repositories: dict[str, Repository] = {}
        self.tokens: dict[str, InstallationToken] = {}
        self.user_tokens: dict[str, UserToken] = {}
        self.pulls: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        # (method, path) -> [(status, Retry-After)]: the next answers to give instead
        self.faults: dict[tuple[str, str], list[tuple[int, str | None]]] = {}
        self._next_repo_id = 500

    # -- set-up ---------------------------------------------------------------------------

    def add_installation(self, installation_id: int, account_login: str) -> Installation:
        made = Installation(installation_id, account_login)
        self.installations[installation_id] = made
        return made

    def add_repository(
        self,
        installation_id: int,
        full_name: str,
        *,
        files: dict[str, str] | None = None,
        protected: tuple[str, ...] = ("main",),
    ) -> Repository:
        """A real bare repository with one commit on `main`, and its branch protection."""
        owner, name = full_name.split("/")
        self._next_repo_id += 1
        path = self.root / owner / f"{name}.git"
        work = self.root / ".seed" / owner / name
        work.mkdir(parents=True)
        for rel, text in (files or {"README.md": f"# {name}\n"}).items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(text)
        _git("init", "-q", "-b", "main", cwd=work)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "-m", "initial", cwd=work)
        path.parent.mkdir(parents=True, exist_ok=True)
        _git("clone", "-q", "--bare", str(work), str(path), cwd=self.root)
        hook = path / "hooks" / "pre-receive"
        hook.write_text(PRE_RECEIVE.replace("{protected}", " ".join(protected)))
        hook.chmod(0o755)
        repo = Repository(self._next_repo_id, owner, name, installation_id, path)
        self.repositories[full_name.lower()] = repo
        return repo

    def add_user_token(self, login: str, installation_ids: tuple[int, ...]) -> str:
        token = "ghu_" + secrets.token_urlsafe(27)
        self.user_tokens[token] = UserToken(token, login, installation_ids)
        return token

    def fail_next(
        self, method: str, path: str, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        self.faults.setdefault((method, path), []).extend([(status, retry_after)] * times)

    # -- what the API does ----------------------------------------------------------------

    def repository(self, full_name: str) -> Repository:
        repo = self.repositories.get(full_name.lower())
        if repo is None:
            raise StandInError(404, "Not Found")
        return repo

    def installation(self, installation_id: int) -> Installation:
        found = self.installations.get(installation_id)
        if found is None:
            raise StandInError(404, "Not Found")
        return found

    def issue_token(self, installation_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """POST /app/installations/{id}/access_tokens, as GitHub answers it."""
        inst = self.installation(installation_id)
        mine = [r for r in self.repositories.values() if r.installation_id == inst.id]
        names, ids = body.get("repositories"), body.get("repository_ids")
        if names is None and ids is None:
            chosen, selection = mine, "all"
        else:
            wanted_names = {str(n).lower() for n in names or []}
            wanted_ids = {int(i) for i in ids or []}
            chosen = [r for r in mine if r.name.lower() in wanted_names or r.id in wanted_ids]
            found = {r.name.lower() for r in chosen} | {r.id for r in chosen}
            if not wanted_names | wanted_ids <= found:
                raise StandInError(
                    422,
                    "There is at least one repository that does not exist or is not "
                    "accessible to the parent installation.",
                )
            selection = "selected"
        asked = body.get("permissions")
        if asked is None:
            permissions = dict(inst.permissions)
        else:
            if not isinstance(asked, dict):
                raise StandInError(422, "Invalid request: permissions is not an object.")
            for name, level in asked.items():
                held = inst.permissions.get(name)
                if level not in LEVELS or held is None or LEVELS[level] > LEVELS[held]:
                    raise StandInError(
                        422, "The permissions requested are not granted to this installation."
                    )
            permissions = {str(k): str(v) for k, v in asked.items()}
        now = self.clock()
        token = InstallationToken(
            "ghs_" + secrets.token_urlsafe(27),
            inst.id,
            frozenset(r.id for r in chosen),
            permissions,
            now + TOKEN_LIFE_S,
        )
        self.tokens[token.token] = token
        return {
            "token": token.token,
            "expires_at": iso(token.expires_at),
            "permissions": permissions,
            "repository_selection": selection,
            "repositories": [r.to_api(self.base_url) for r in chosen],
        }

    def branches(self, repo: Repository) -> dict[str, str]:
        out = _git(
            "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads", cwd=repo.path
        )
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def list_pulls(self, repo: Repository, head: str | None, base: str | None) -> list[Any]:
        """GET /repos/{o}/{r}/pulls?head=owner:branch&base=...: the open ones that match."""
        return [
            p
            for p in self.pulls
            if p["repository"] == repo.full_name
            and p["state"] == "open"
            and (head is None or f"{repo.owner}:{p['head']['ref']}" == head)
            and (base is None or p["base"]["ref"] == base)
        ]

    def open_pull(self, repo: Repository, body: dict[str, Any]) -> dict[str, Any]:
        head, base, title = body.get("head"), body.get("base"), body.get("title")
        branches = self.branches(repo)
        if not isinstance(title, str) or not title:
            raise StandInError(422, "Validation Failed: title is missing")
        if not isinstance(head, str) or head.split(":")[-1] not in branches:
            raise StandInError(422, "Validation Failed: head is invalid")
        if not isinstance(base, str) or base not in branches:
            raise StandInError(422, "Validation Failed: base is invalid")
        for pull in self.pulls:
            if (
                pull["repository"] == repo.full_name
                and pull["head"]["ref"] == head.split(":")[-1]
                and pull["base"]["ref"] == base
                and pull["state"] == "open"
            ):
                raise StandInError(
                    422,
                    f"Validation Failed: A pull request already exists for {repo.owner}:{head}.",
                )
        number = len(self.pulls) + 1
        pull = {
            "number": number,
            "state": "open",
            "title": title,
            "body": body.get("body"),
            "url": f"{self.base_url}/repos/{repo.full_name}/pulls/{number}",
            "html_url": f"{self.base_url}/{repo.full_name}/pull/{number}",
            "head": {"ref": head.split(":")[-1], "sha": branches[head.split(":")[-1]]},
            "base": {"ref": base, "sha": branches[base]},
            "repository": repo.full_name,
        }
        self.pulls.append(pull)
        return pull
