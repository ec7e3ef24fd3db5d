"""Hetzner Cloud through its official library (``hcloud``).

Sizes come from the capacity map (control_plane/demand/capacity.py): each of our sizes is
a Hetzner server type of exactly that room. The library is pointed at another endpoint
for tests (a stand-in of the API on loopback). Its own retry loop is turned off: a retry
is the dispatcher's next leased step, which honours the API's ``RateLimit-Reset`` instead
of sleeping in a worker thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from control_plane.providers.base import (
    ProviderError,
    Vm,
    VmSpec,
    VmStatus,
    label_selector,
)

API_ENDPOINT = "https://api.hetzner.cloud/v1"
# Our sizes as Hetzner server types (shared vCPU, x86): the capacity map's rows exactly.
SERVER_TYPES = {"small": "cx22", "medium": "cx32", "large": "cx42"}
DEFAULT_IMAGE = "debian-12"
_STATUS = {
    "initializing": VmStatus.CREATING,
    "starting": VmStatus.CREATING,
    "running": VmStatus.RUNNING,
    "stopping": VmStatus.STOPPED,
    "off": VmStatus.STOPPED,
    "deleting": VmStatus.DELETING,
}
# Application errors that say "later", besides HTTP 5xx (docs.hetzner.cloud, Errors).
_TRANSIENT_CODES = {
    "rate_limit_exceeded",
    "conflict",
    "locked",
    "timeout",
    "bad_gateway",
    "unavailable",
    "service_error",
    "server_error",
    "maintenance",
}


def server_type_for(size: str) -> str:
    try:
        return SERVER_TYPES[size]
    except KeyError:
        raise ProviderError(f"no Hetzner server type for size {size!r}", transient=False) from None


class HetznerProvider:
    name = "hetzner"

    def __init__(
        self,
        token: str,
        *,
        endpoint: str = API_ENDPOINT,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = Client(token=token, api_endpoint=endpoint, timeout=timeout_s)
        self._clock = clock
        self._last = threading.local()  # the calling thread's last answer
        self._hook_rate_limit()

    def _hook_rate_limit(self) -> None:
        # hcloud keeps the response headers to itself; a requests response hook (public
        # API of requests) on its session sees RateLimit-Reset before the error is raised.
        inner: Any = getattr(self._client, "_client", None)
        session = getattr(inner, "_session", None)
        if isinstance(session, requests.Session):
            session.hooks["response"].append(self._on_response)
        if inner is not None and hasattr(inner, "_retry_max_retries"):
            inner._retry_max_retries = 0

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        reset = response.headers.get("RateLimit-Reset")
        self._last.reset_at = float(reset) if reset and reset.isdigit() else None
        self._last.status = response.status_code

    def _error(self, what: str, exc: Exception) -> ProviderError:
        if isinstance(exc, APIException):
            code = exc.code
            status = getattr(self._last, "status", None)
            transient = (
                (isinstance(code, int) and code >= 500)
                or (status is not None and status >= 500)
                or code in _TRANSIENT_CODES
            )
            retry_after = None
            reset_at = getattr(self._last, "reset_at", None)
            if code == "rate_limit_exceeded" and reset_at is not None:
                retry_after = max(0.0, reset_at - self._clock())
            # exc.message is the API's text: never the token, never the user-data
            refused = status is not None and 400 <= status < 500
            return ProviderError(
                f"hetzner {what}: {code}: {exc.message}",
                transient=transient,
                retry_after_s=retry_after,
                applied=False if refused else None,
            )
        # the request never got an answer: it may or may not have been applied
        return ProviderError(f"hetzner {what}: {type(exc).__name__}", transient=True)

    def create(self, spec: VmSpec) -> Vm:
        try:
            answer = self._client.servers.create(
                name=spec.name,
                server_type=ServerType(name=server_type_for(spec.size)),
                image=Image(name=spec.image or DEFAULT_IMAGE),
                location=Location(name=spec.region) if spec.region else None,
                user_data=spec.user_data,
                labels=dict(spec.labels),
            )
        except (APIException, requests.RequestException) as exc:
            raise self._error("create", exc) from exc
        return _vm(answer.server)

    def delete(self, provider_id: str) -> None:
        try:
            server = self._client.servers.get_by_id(int(provider_id))
            server.delete()
        except APIException as exc:
            if exc.code == "not_found":
                return  # gone already: what a delete wants
            raise self._error("delete", exc) from exc
        except requests.RequestException as exc:
            raise self._error("delete", exc) from exc

    def list(self, labels: Mapping[str, str]) -> list[Vm]:
        try:
            servers = self._client.servers.get_all(label_selector=label_selector(labels))
        except (APIException, requests.RequestException) as exc:
            raise self._error("list", exc) from exc
        return [_vm(s) for s in servers]

    def get(self, provider_id: str) -> Vm | None:
        try:
            return _vm(self._client.servers.get_by_id(int(provider_id)))
        except APIException as exc:
            if exc.code == "not_found":
                return None
            raise self._error("get", exc) from exc
        except requests.RequestException as exc:
            raise self._error("get", exc) from exc


def _vm(server: BoundServer) -> Vm:
    address = None
    net = server.public_net
    if net is not None and net.ipv4 is not None:
        address = net.ipv4.ip
    return Vm(
        provider_id=str(server.id),
        name=str(server.name),
        status=_STATUS.get(str(server.status), VmStatus.UNKNOWN),
        labels=dict(server.labels or {}),
        address=address,
    )
