"""The control plane's server logs (uvicorn's own lines: a request that failed, with its
traceback) keep one event a line: what a request put in an exception cannot forge one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from control_plane.app import create_app, serve_control_plane
from control_plane.settings import ControlPlaneSettings
from vm_agent.runtime.logs import TRACEBACK_MARK

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FORGED = "12:00:00 WARNING uvicorn.error: all is well"


async def _fails_with_the_body(request: Request) -> Response:
    raise RuntimeError((await request.body()).decode())


async def test_a_failed_request_s_traceback_cannot_forge_a_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp", public_url="http://127.0.0.1:1", database_url=None
    )
    app = create_app(settings)
    # A route that fails with what the client sent (no real route does, on purpose).
    app.router.routes.append(Route("/fail", _fails_with_the_body, methods=["POST"]))
    async with serve_control_plane(settings, app=app) as url, httpx.AsyncClient() as client:
        r = await client.post(f"{url}/fail", content=f"x\n{FORGED}\r{FORGED}\x1b[1G".encode())
        assert r.status_code == 500
    err = capfd.readouterr().err
    lines = err.splitlines()
    (head,) = [line for line in lines if "Exception in ASGI application" in line]
    assert head.split()[1:3] == ["ERROR", "uvicorn.error:"]
    # Every line the attacker's text is on is a marked traceback line, escaped.
    carrying = [line for line in lines if "all is well" in line]
    assert carrying and all(line.startswith(TRACEBACK_MARK) for line in carrying)
    assert not any(line.startswith(FORGED) for line in lines)
    assert "\x1b" not in err
