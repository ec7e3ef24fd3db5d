"""A stand-in of the Hetzner Cloud API (``/v1``) on loopback: the part that cannot run here.

It speaks the API's wire format (docs.hetzner.cloud: servers, label selectors, pagination,
the error object, ``RateLimit-*`` headers) well enough for the official ``hcloud`` library,
keeps servers in memory, records every call, and takes scripted faults: a 429 with its
reset, a 5xx, a server stuck initializing, and a create that is applied but never answered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control_plane.serving import uvicorn_serving

SERVER_TYPES = {"cx22": (2, 4.0, 40), "cx32": (4, 8.0, 80), "cx42": (8, 16.0, 160)}
MAX_USER_DATA = 32 * 1024


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str


@dataclass
class StandIn:
    token: str
    servers: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # (method, path prefix) -> faults to serve, first first: ("429", reset_in_s),
    # ("5xx", status), ("no-answer", None): apply the request, then never answer
    faults: list[tuple[str, str, str, float | None]] = field(default_factory=list)
    stuck: set[str] = field(default_factory=set)  # server names that stay initializing
    now: float = 1_800_000_000.0
    unanswered: anyio.Event = field(default_factory=anyio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    def fail(self, method: str, path: str, kind: str, value: float | None = None) -> None:
        self.faults.append((method, path, kind, value))

    def _fault(self, method: str, path: str) -> tuple[str, float | None] | None:
        for i, (m, prefix, kind, value) in enumerate(self.faults):
            if m == method and path.startswith(prefix):
                del self.faults[i]
                return kind, value
        return None

    def live(self) -> list[dict[str, Any]]:
        return [s for s in self.servers.values() if s["status"] != "deleted"]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "details": {}}}
    return JSONResponse(body, status_code=status, headers=headers)


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _server_json(server: dict[str, Any]) -> dict[str, Any]:
    cores, memory, disk = SERVER_TYPES[server["server_type"]]
    return {
        "id": server["id"],
        "name": server["name"],
        "status": server["status"],
        "created": server["created"],
        "public_net": {
            # documentation addresses (TEST-NET-3): never contacted
            "ipv4": {
                "id": server["id"],
                "ip": f"203.0.113.{server['id'] % 250 + 1}",
                "blocked": False,
                "dns_ptr": "",
            },
            "ipv6": None,
            "floating_ips": [],
            "firewalls": [],
        },
        "private_net": [],
        "server_type": {
            "id": 1,
            "name": server["server_type"],
            "cores": cores,
            "memory": memory,
            "disk": disk,
        },
        "image": {"id": 114690387, "name": server["image"], "type": "system"},
        "labels": server["labels"],
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": disk,
        "protection": {"delete": False, "rebuild": False},
        "locked": False,
        "rescue_enabled": False,
    }


def _action(command: str, resource_id: int) -> dict[str, Any]:
    return {
        "id": resource_id * 10 + 1,
        "command": command,
        "status": "running",
        "progress": 0,
        "started": "2026-12-07T00:00:00+00:00",
        "finished": None,
        "resources": [{"id": resource_id, "type": "server"}],
        "error": None,
    }


def make_app(standin: StandIn) -> Starlette:
    async def guard(request: Request) -> tuple[Any, Response | None]:
        body: Any = None
        raw = await request.body()
        if raw:
            body = json.loads(raw)
        auth = request.headers.get("authorization", "")
        standin.calls.append(
            Call(request.method, request.url.path, dict(request.query_params), body, auth)
        )
        if auth != f"Bearer {standin.token}":
            return body, _error(401, "unauthorized", "unable to authenticate")
        fault = standin._fault(request.method, request.url.path)
        if fault is not None:
            kind, value = fault
            if kind == "429":
                reset = int(standin.now + (value or 0))
                headers = {"RateLimit-Limit": "3600", "RateLimit-Remaining": "0",
                           "RateLimit-Reset": str(reset)}  # fmt: skip
                return body, _error(429, "rate_limit_exceeded", "limit reached", headers)
            if kind == "5xx":
                return body, _error(int(value or 503), "unavailable", "try again later")
            if kind == "no-answer":
                return body, Response(status_code=599)  # marker: apply, then hang
        return body, None

    async def hang() -> Response:
        # The change is applied; the answer never comes (the client times out).
        await standin.unanswered.wait()
        return _error(504, "timeout", "gave up")

    async def create(request: Request) -> Response:
        body, refused = await guard(request)
        no_answer = refused is not None and refused.status_code == 599
        if refused is not None and not no_answer:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return _error(400, "invalid_input", "invalid input in field 'name'")
        if body.get("server_type") not in SERVER_TYPES:
            return _error(400, "invalid_input", "invalid input in field 'server_type'")
        if len(str(body.get("user_data", "")).encode()) > MAX_USER_DATA:
            return _error(400, "invalid_input", "user_data too long")
        if any(s["name"] == body["name"] for s in standin.live()):
            return _error(409, "uniqueness_error", "server name is already used")
        sid = next(standin._ids)
        server = {
            "id": sid,
            "name": body["name"],
            "status": "initializing",
            "created": dt.datetime.fromtimestamp(standin.now, dt.UTC).isoformat(),
            "server_type": body["server_type"],
            "image": body.get("image"),
            "labels": dict(body.get("labels") or {}),
            "user_data": body.get("user_data"),
            "location": body.get("location"),
        }
        standin.servers[sid] = server
        if no_answer:
            return await hang()
        answer: dict[str, Any] = {
            "server": _server_json(server),
            "action": _action("create_server", sid),
            "next_actions": [],
            "root_password": None,
        }
        return JSONResponse(answer, status_code=201)

    def _progress(server: dict[str, Any]) -> None:
        # a server boots between two reads, unless it is one that stays stuck
        if server["status"] == "initializing" and server["name"] not in standin.stuck:
            server["status"] = "running"

    async def list_servers(request: Request) -> Response:
        _, refused = await guard(request)
        if refused is not None:
            return refused
        selector = request.query_params.get("label_selector", "")
        page = int(request.query_params.get("page", "1"))
        per_page = min(int(request.query_params.get("per_page", "25")), 50)
        found = [s for s in standin.live() if _matches(s["labels"], selector)]
        for s in found:
            _progress(s)
        last = max(1, -(-len(found) // per_page))
        chunk = found[(page - 1) * per_page : page * per_page]
        meta = {"pagination": {"page": page, "per_page": per_page,
                               "previous_page": page - 1 if page > 1 else None,
                               "next_page": page + 1 if page < last else None,
                               "last_page": last, "total_entries": len(found)}}  # fmt: skip
        return JSONResponse({"servers": [_server_json(s) for s in chunk], "meta": meta})

    def _find(request: Request) -> dict[str, Any] | None:
        try:
            server = standin.servers.get(int(request.path_params["sid"]))
        except ValueError:
            return None
        return server if server is not None and server["status"] != "deleted" else None

    async def get_server(request: Request) -> Response:
        _, refused = await guard(request)
        if refused is not None:
            return refused
        server = _find(request)
        if server is None:
            return _error(404, "not_found", "server not found")
        _progress(server)
        return JSONResponse({"server": _server_json(server)})

    async def delete_server(request: Request) -> Response:
        _, refused = await guard(request)
        if refused is not None:
            return refused
        server = _find(request)
        if server is None:
            return _error(404, "not_found", "server not found")
        server["status"] = "deleted"
        return JSONResponse({"action": _action("delete_server", server["id"])})

    return Starlette(
        routes=[
            Route("/v1/servers", create, methods=["POST"]),
            Route("/v1/servers", list_servers, methods=["GET"]),
            Route("/v1/servers/{sid}", get_server, methods=["GET"]),
            Route("/v1/servers/{sid}", delete_server, methods=["DELETE"]),
        ]
    )


@contextlib.asynccontextmanager
async def serving(standin: StandIn) -> AsyncIterator[str]:
    """Serves the stand-in on 127.0.0.1; yields its API endpoint (``http://.../v1``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(make_app(standin), log_level="warning", lifespan="off")
    try:
        async with uvicorn_serving(config, [sock], "hetzner stand-in"):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
            standin.unanswered.set()
    finally:
        sock.close()
