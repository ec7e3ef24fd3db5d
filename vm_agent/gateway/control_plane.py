"""`vm-agent acp --task ID`: where the task's session is, asked of the control plane.

``POST /api/tasks/{id}/connection`` (docs/control-plane.md) answers the node's viewer URL,
the name its certificate carries, the node CA, the session id and a short-lived viewer
token of the task's owner. The gateway asks once at start, and again for a fresh token
when the daemon closes the connection because the token expired (4001).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vm_agent.gateway.link import LinkFailed

_TIMEOUT_S = 30.0


class ControlPlaneUnreachable(OSError):
    """The control plane did not answer (a network error, a 5xx): worth asking again."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    session_id: str = Field(alias="sessionId", min_length=1)
    viewer_url: str = Field(alias="viewerUrl", pattern=r"^wss?://")
    tls_name: str | None = Field(default=None, alias="tlsName")
    ca_pem: str | None = Field(default=None, alias="caPem")
    token: str = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class TaskConnection:
    session_id: str
    viewer_url: str
    tls_name: str | None  # the name the node's certificate must carry (None: ws://)
    ca_pem: str | None
    token: str


def parse_connection(body: Any) -> TaskConnection:
    """The control plane's answer, checked (LinkFailed naming what is wrong). Pure."""
    try:
        a = _Answer.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        why = f"the control plane's answer is not usable: {where}: {first['msg']}"
        raise LinkFailed(why) from None
    if a.viewer_url.startswith("wss://") and not (a.tls_name and a.ca_pem):
        raise LinkFailed("the control plane gave a wss:// URL without the TLS name and CA")
    return TaskConnection(a.session_id, a.viewer_url, a.tls_name, a.ca_pem, a.token)


def refusal_message(status: int, body: Any) -> str:
    """What a refusal of the control plane says, for a person. Pure."""
    error = body.get("error") if isinstance(body, dict) else None
    return f"the control plane refused (HTTP {status}): {error or 'no reason given'}"


def tls_context(conn: TaskConnection) -> ssl.SSLContext | None:
    """Trust only the node CA the control plane gave (not the system's CAs)."""
    if conn.tls_name is None or conn.ca_pem is None:
        return None
    try:
        ctx = ssl.create_default_context(cadata=conn.ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise LinkFailed(f"the control plane's node CA is not usable: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def fetch_connection(base_url: str, user_token: str, task_id: str) -> TaskConnection:
    """Asks the control plane; LinkFailed when it refuses (the task is not the token's
    user's, has no session yet, the token is bad), ControlPlaneUnreachable when it cannot
    answer."""
    url = f"{base_url.rstrip('/')}/api/tasks/{quote(task_id, safe='')}/connection"
    headers = {"Authorization": f"Bearer {user_token}"}
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT_S, trust_env=False) as client:
            r = await client.post(url, headers=headers)
    except httpx.HTTPError as exc:
        raise ControlPlaneUnreachable(f"cannot reach the control plane: {exc}") from exc
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code >= 500:
        raise ControlPlaneUnreachable(refusal_message(r.status_code, body))
    if r.status_code != 200:
        raise LinkFailed(refusal_message(r.status_code, body))
    return parse_connection(body)
