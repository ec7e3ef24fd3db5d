"""git smart-HTTP through the real `git http-backend` (CGI), for the stand-in's repositories."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response


def _cgi_answer(output: bytes) -> Response:
    """CGI output (headers, a blank line, the body) as an HTTP response."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(sep)
        if found:
            break
    else:
        return Response(b"git http-backend wrote no headers", status_code=502)
    status = 200
    headers: dict[str, str] = {}
    for raw in head.splitlines():
        name, _, value = raw.decode("latin-1").partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name] = value.strip()
    return Response(body, status_code=status, headers=headers)


async def serve_git(request: Request, project_root: Path, path_info: str, user: str) -> Response:
    """Hand one smart-HTTP request to `git http-backend` for `project_root`/`path_info`.

    REMOTE_USER is set only once the caller was allowed in: git enables receive-pack for an
    authenticated user only.
    """
    body = await request.body()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(project_root),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_PROJECT_ROOT": str(project_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path_info,
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_USER": user,
        "REMOTE_ADDR": request.client.host if request.client else "127.0.0.1",
    }
    if "git-protocol" in request.headers:
        env["GIT_PROTOCOL"] = request.headers["git-protocol"]
    if "content-encoding" in request.headers:
        env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
    done = await anyio.run_process(["git", "http-backend"], input=body, env=env, check=False)
    if done.returncode != 0 and not done.stdout:
        return Response(done.stderr, status_code=500)
    return _cgi_answer(done.stdout)
