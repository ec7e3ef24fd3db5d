"""A task's repository as ``session/start`` names it, and the checks on it. Pure.

The URL is the control plane's (``https``; ``http`` for loopback stand-ins and forwards);
branch names follow ``git check-ref-format --branch`` closely enough to refuse anything that
could be read as an option, a revision expression or a path out of ``refs/heads``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}$")
_NAME = re.compile(r"^[^\x00-\x1f<>\n]{1,200}$")


def check_branch(name: str) -> str:
    """A plain branch name; ``ValueError`` naming the problem otherwise."""
    if (
        not _BRANCH.match(name)
        or ".." in name
        or "//" in name
        or name.endswith(("/", ".", ".lock"))
        or "/." in name
        or name == "HEAD"
    ):
        raise ValueError(f"{name!r} is not a plain branch name")
    return name


class Author(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254)

    @field_validator("name", "email")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be one line without control characters or angle brackets")
        return value


class RepositorySpec(BaseModel):
    """``session/start``'s ``repository`` (the contract of issue 23)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workspace_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(min_length=8, max_length=2000)
    base_branch: str | None = None
    task_branch: str
    author: Author

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http"):
            raise ValueError("url must be https (or http)")
        if not parts.hostname or parts.username or parts.password:
            raise ValueError("url must name a host and carry no credentials")
        if parts.query or parts.fragment or not parts.path.strip("/"):
            raise ValueError("url must be a repository's path, without query or fragment")
        if any(c.isspace() or ord(c) < 0x20 for c in value):
            raise ValueError("url must not hold spaces or control characters")
        return value

    @field_validator("base_branch", "task_branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else check_branch(value)

    @property
    def host(self) -> str:
        """``host[:port]`` as git's credential protocol names it."""
        return urlsplit(self.url).netloc.lower()

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def path(self) -> str:
        return _repo_path(urlsplit(self.url).path)


def _repo_path(path: str) -> str:
    """A repository's path compared without the leading slash, a trailing ``.git`` or ``/``."""
    path = path.strip("/")
    return path[: -len(".git")] if path.endswith(".git") else path


def parse_credential_request(text: str) -> dict[str, str]:
    """git's credential protocol: ``key=value`` lines up to an empty line."""
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            break
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ValueError("not a credential request")
        fields[key] = value
    return fields


def request_matches(spec: RepositorySpec, request: dict[str, str]) -> str | None:
    """Why a credential request is not for ``spec``'s repository (None: it is). git must
    send the path (``credential.useHttpPath``), so a token never goes to another path."""
    if request.get("protocol") != spec.scheme:
        return f"protocol {request.get('protocol')!r} is not the repository's"
    if (request.get("host") or "").lower() != spec.host:
        return f"host {request.get('host')!r} is not the repository's"
    if "path" not in request:
        return "the request names no path (credential.useHttpPath is off)"
    if _repo_path(request["path"]) != spec.path:
        return f"path {request['path']!r} is not the repository's"
    return None


def credential_answer(token: str) -> str:
    return f"username=x-access-token\npassword={token}\n\n"
