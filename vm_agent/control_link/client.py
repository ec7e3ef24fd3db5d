"""The HTTP client of the callback API (docs/callback-api.md).

One `httpx.AsyncClient` (connections reused, explicit timeouts). Each call is retried by
tenacity with exponential backoff and full jitter on connection errors, 5xx and 429 (a
`Retry-After` is honoured, capped); other 4xx are not retried. 401 raises
`CallbackUnauthorized`, 403 `CallbackForbidden`; retries used up raise `CallbackUnavailable`.

The token is read from the store at every attempt (a refresh applies at once) and sent only
in the `Authorization` header: httpx logs the method, URL and status, never headers, and
tenacity logs nothing unless given a logger (none is).
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

import anyio
import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from vm_agent.control_link.health import FailureReason, LinkHealth, LinkMetrics, LinkState
from vm_agent.control_link.token import CallbackTokenStore
from vm_agent.eventlog import Event


class CallbackError(Exception):
    """A callback did not succeed."""


class CallbackUnauthorized(CallbackError):
    """401: the callback token expired or was revoked."""


class CallbackForbidden(CallbackError):
    """403: the token is not allowed this call (another node's, or the wrong kind)."""


class CallbackUnavailable(CallbackError):
    """Network errors, 5xx or 429 on every attempt."""


class CallbackRejected(CallbackError):
    """Another 4xx (not retried: sending the same request again cannot help)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CallbackProtocolError(CallbackError):
    """A 2xx answer whose body is not what the API promises."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    initial_s: float = 0.5  # the backoff's scale: attempt n waits up to initial * 2**n
    max_s: float = 10.0
    max_retry_after_s: float = 120.0
    timeout_s: float = 15.0
    connect_timeout_s: float = 5.0


class Credentials(NamedTuple):
    env: dict[str, str]
    owner: str | None  # whose session the control plane says it is (None: it did not say)


class HeartbeatAnswer(NamedTuple):
    interval_s: float | None
    token: str | None
    drain: bool = False  # the control plane drains this node: no new sessions


class _Retryable(Exception):
    def __init__(self, reason: FailureReason, detail: str, retry_after: float | None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class ControlPlaneClient:
    def __init__(
        self,
        base_url: str,
        node_id: str,
        tokens: CallbackTokenStore,
        *,
        http: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
        metrics: LinkMetrics | None = None,
        retry: RetryPolicy | None = None,
        health: LinkHealth | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.node_id = node_id
        self.tokens = tokens
        self.retry = retry or RetryPolicy()
        self.health = health or LinkHealth(metrics)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(self.retry.timeout_s, connect=self.retry.connect_timeout_s),
            follow_redirects=False,  # never carry the token to another place
            verify=verify,
        )
        self._backoff = wait_random_exponential(
            multiplier=self.retry.initial_s, max=self.retry.max_s
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # The calls.

    async def ready(self, version: str, capacity: Mapping[str, Any]) -> None:
        await self._post("ready", _json({"version": version, "capacity": dict(capacity)}))

    async def heartbeat(
        self,
        sessions: Sequence[Mapping[str, Any]],
        usage: Mapping[str, Any],
        activity: Mapping[str, int] | None = None,
        drained: bool = False,
    ) -> HeartbeatAnswer:
        fields: dict[str, Any] = {"sessions": [dict(s) for s in sessions], "usage": dict(usage)}
        if activity is not None:
            fields["activity"] = dict(activity)
        if drained:
            fields["drained"] = True
        answer = await self._post("heartbeat", _json(fields))
        interval = answer.get("interval_s")
        token = answer.get("token")
        drain = answer.get("drain", False)
        if not isinstance(drain, bool):
            raise CallbackProtocolError("heartbeat answer: drain is not a boolean")
        if interval is not None and (
            not isinstance(interval, int | float) or isinstance(interval, bool) or interval <= 0
        ):
            raise CallbackProtocolError("heartbeat answer: interval_s is not a positive number")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise CallbackProtocolError("heartbeat answer: token is not a non-empty string")
        return HeartbeatAnswer(None if interval is None else float(interval), token, drain)

    async def post_events(self, events: Sequence[Event]) -> tuple[int, int]:
        """Post stored events as they are (each payload is already `{session_id, seq, ...}`)."""
        body = b'{"events":[' + ",".join(e.payload for e in events).encode("utf-8") + b"]}"
        answer = await self._post("events", body)
        stored, duplicates = answer.get("stored"), answer.get("duplicates")
        if not isinstance(stored, int) or not isinstance(duplicates, int):
            raise CallbackProtocolError("events answer: stored/duplicates are not integers")
        return stored, duplicates

    async def agent_credentials(self, session_id: str, agent: str) -> Credentials:
        path = f"sessions/{session_id}/agent-credentials"
        answer = await self._post(path, _json({"agent": agent}))
        env, owner = answer.get("env"), answer.get("owner")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            # Never echo the body: it holds secrets.
            raise CallbackProtocolError("agent-credentials answer: env is not a map of strings")
        if owner is not None and not isinstance(owner, str):
            raise CallbackProtocolError("agent-credentials answer: owner is not a string")
        return Credentials(dict(env), owner)

    async def mcp_secrets(self, session_id: str) -> Credentials:
        """The secrets the MCP servers of the session's task name, for its agent's spawn
        (by secret name), and whose session it is."""
        answer = await self._post(f"sessions/{session_id}/mcp-secrets", b"{}")
        values, owner = answer.get("values"), answer.get("owner")
        if owner is not None and not isinstance(owner, str):
            raise CallbackProtocolError("mcp-secrets answer: owner is not a string")
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            # Never echo the body: it holds secrets.
            raise CallbackProtocolError("mcp-secrets answer: values is not a map of strings")
        return Credentials(dict(values), owner)

    async def session_details(self, session_id: str) -> dict[str, Any] | None:
        """What the control plane recorded for a session it made on this node; None (its
        404) when it made no such session."""
        try:
            answer = await self._post(f"sessions/{session_id}/details", b"{}")
        except CallbackRejected as exc:
            if exc.status == 404:
                return None
            raise
        owner, agent = answer.get("owner"), answer.get("agent")
        reservation = answer.get("reservation")
        if not isinstance(owner, str) or not isinstance(agent, str):
            raise CallbackProtocolError("session details: owner and agent must be strings")
        if reservation is not None and not isinstance(reservation, dict):
            raise CallbackProtocolError("session details: reservation is not an object")
        return answer

    async def git_token(self, workspace_id: str, access: str) -> tuple[str, float]:
        """A GitHub installation token for the workspace's repository, and when it expires
        (epoch seconds); ``access`` is ``read`` (the agent's git) or ``write`` (the push)."""
        answer = await self._post(f"workspaces/{workspace_id}/git-token", _json({"access": access}))
        token, expires_at = answer.get("token"), answer.get("expiresAt")
        if not isinstance(token, str) or not token or "\n" in token:
            raise CallbackProtocolError("git-token answer: token is not a one-line string")
        if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            raise CallbackProtocolError("git-token answer: expiresAt is not a number")
        return token, float(expires_at)

    async def renew_certificate(self, csr: str) -> str:
        """The node's new certificate (PEM) for a request signed by its key."""
        answer = await self._post("certificate", _json({"csr": csr}))
        certificate = answer.get("certificate")
        if not isinstance(certificate, str) or "BEGIN CERTIFICATE" not in certificate:
            raise CallbackProtocolError("certificate answer: no PEM certificate")
        return certificate

    # Plumbing.

    async def _post(self, path: str, body: bytes) -> dict[str, Any]:
        url = f"{self.base_url}/api/nodes/{self.node_id}/{path}"
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.retry.attempts),
            wait=self._wait,
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._once(url, body)
                    self.health.succeeded()
                    return _answer(response)
        except _Retryable as exc:
            self.health.failed(LinkState.UNREACHABLE, exc.detail)
            raise CallbackUnavailable(f"{path}: {exc.detail}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _once(self, url: str, body: bytes) -> httpx.Response:
        token = self.tokens.value
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            response = await self.http.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            self.health.attempt_failed("network")
            raise _Retryable("network", f"{type(exc).__name__}: {exc}", None) from None
        status = response.status_code
        if status < 300:
            return response
        detail = f"HTTP {status}: {error_text(response)}"
        if status in (401, 403) and self.tokens.value != token:
            # The token was replaced while this request ran: its refusal is stale news.
            self.health.attempt_failed("unauthorized" if status == 401 else "forbidden")
            raise _Retryable("unauthorized", detail, 0.0)
        if status == 401:
            self.health.attempt_failed("unauthorized")
            self.health.failed(LinkState.UNAUTHORIZED, detail)
            raise CallbackUnauthorized(detail)
        if status == 403:
            self.health.attempt_failed("forbidden")
            self.health.failed(LinkState.FORBIDDEN, detail)
            raise CallbackForbidden(detail)
        if status == 429 or status >= 500:
            self.health.attempt_failed("server_error")
            raise _Retryable("server_error", detail, _retry_after(response))
        self.health.attempt_failed("other")
        raise CallbackRejected(status, detail)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry.max_retry_after_s)
        return float(self._backoff(state))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        raise CallbackProtocolError(f"HTTP {response.status_code}: body is not JSON") from None
    if not isinstance(value, dict):
        raise CallbackProtocolError(f"HTTP {response.status_code}: body is not a JSON object")
    return value


def error_text(response: httpx.Response) -> str:
    try:
        value = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    error = value.get("error") if isinstance(value, dict) else None
    return str(error)[:200] if error else response.reason_phrase or "error"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta seconds or an HTTP date)."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
