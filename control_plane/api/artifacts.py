"""``GET /artifacts/{name}``: the files the manifest names, and the manifest itself.

Public: artifacts are not secret; a VM checks each one against the sha256 in its
user-data. Only names the current manifest lists are served, so no path reaches
anything else in the directory.
"""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of
from control_plane.provisioning.artifacts.manifest import (
    MANIFEST_NAME,
    ManifestError,
    load_manifest,
)


async def artifact(request: Request) -> Response:
    name = request.path_params["name"]
    directory = plane_of(request).settings.artifacts_path
    try:
        manifest = await to_thread.run_sync(load_manifest, directory)
    except ManifestError:
        raise ApiError(404, "no artifacts built") from None
    if name != MANIFEST_NAME and name not in manifest.files():
        raise ApiError(404, "no such artifact")
    media = "application/json" if name == MANIFEST_NAME else "application/octet-stream"
    return FileResponse(directory / name, media_type=media)


routes = [Route("/artifacts/{name}", artifact, methods=["GET"])]
