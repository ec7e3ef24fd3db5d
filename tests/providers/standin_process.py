"""The Hetzner stand-in as a process of its own (``python -m tests.providers.standin_process
TOKEN``), for tests whose control planes are processes too: it prints its ``/v1`` endpoint on
a line, serves until killed, and answers two test-only routes beside the API:
``GET /_standin/state`` (every call it was sent, and every server it ever had, deleted ones
too) and ``POST /_standin/servers`` (a server put there directly, as a VM an earlier control
plane left behind)."""

from __future__ import annotations

import dataclasses
import socket
import sys
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from control_plane.serving import uvicorn_serving
from tests.providers.hetzner_standin import StandIn, make_app


def with_inspection(standin: StandIn) -> Starlette:
    async def state(_request: Request) -> Response:
        calls = [dataclasses.asdict(c) | {"authorization": ""} for c in standin.calls]
        servers = [
            {k: v for k, v in s.items() if k != "user_data"} for s in standin.servers.values()
        ]
        return JSONResponse({"calls": calls, "servers": servers})

    async def put_server(request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        sid = next(standin._ids)
        standin.servers[sid] = {
            "id": sid,
            "name": body["name"],
            "status": "running",
            "created": "2026-12-07T00:00:00+00:00",
            "server_type": "cx22",
            "image": "debian-12",
            "labels": dict(body["labels"]),
            "user_data": "",
            "location": None,
        }
        return JSONResponse({"id": sid}, status_code=201)

    return Starlette(
        routes=[
            Route("/_standin/state", state, methods=["GET"]),
            Route("/_standin/servers", put_server, methods=["POST"]),
            Mount("/", app=make_app(standin)),
        ]
    )


async def main(token: str) -> None:
    standin = StandIn(token=token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(with_inspection(standin), log_level="warning", lifespan="off")
    async with uvicorn_serving(config, [sock], "hetzner stand-in"):
        print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
