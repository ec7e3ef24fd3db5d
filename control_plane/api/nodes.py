"""Node creation (admin) and the bootstrap exchange (the VM, with its bootstrap token).

``POST /api/nodes`` makes the record, a single-use bootstrap token (stored hashed) and the
user-data; ``POST /api/nodes/{node_id}/bootstrap`` trades that token and a certificate
request for the callback token, the node's certificate and the CA's (docs/callback-api.md);
``POST /api/nodes/{node_id}/certificate`` renews that certificate (the callback token, and a
request for the key on record);
``GET /api/node-ca.pem`` publishes the CA for viewers and the control plane's own
connections.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud_init import InvalidParameter, UserDataTooLarge, render
from control_plane.api.common import (
    ApiError,
    parse_body,
    plane_of,
    require_callback,
    require_user,
)
from control_plane.identity.node_ca import (
    MAX_CSR_BYTES,
    CsrError,
    NodeCA,
    PublicKey,
    public_key_sha256,
    request_public_key,
)
from control_plane.identity.node_certs import RenewalVerdict, renewal_verdict
from control_plane.identity.tokens import jwks_url
from control_plane.plane import ControlPlane
from control_plane.provisioning import userdata as provisioning
from control_plane.provisioning.artifacts.manifest import Manifest, ManifestError, load_manifest
from control_plane.storage import provisioning_store

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}
PEM_TYPE = "application/x-pem-file"


class BootstrapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csr: str = Field(min_length=1, max_length=MAX_CSR_BYTES)


def _manifest(plane: ControlPlane) -> Manifest:
    try:
        return load_manifest(plane.settings.artifacts_path)
    except ManifestError as exc:
        raise ApiError(
            503, f"no artifacts to provision from ({exc}); run: python -m control_plane "
            f"artifacts build --out {plane.settings.artifacts_path}"
        ) from None  # fmt: skip


def _node_ca(plane: ControlPlane) -> NodeCA:
    return plane.node_ca  # opened (file I/O) on first use: call in a worker thread


def _ca_for_user_data(plane: ControlPlane) -> str | None:
    path = plane.settings.user_data_ca_file
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise ApiError(500, f"user_data_ca_file: cannot read: {exc.strerror}") from None


async def create_node(request: Request) -> JSONResponse:
    claims = require_user(request, admin=True)
    body = await parse_body(request, provisioning.NodeRequest)
    plane = plane_of(request)
    manifest = await to_thread.run_sync(_manifest, plane)
    try:
        agents = provisioning.chosen_agents(body.agents, manifest)
    except provisioning.UnknownAgents as exc:
        raise ApiError(422, str(exc)) from None
    node_id = body.node_id or provisioning.new_node_id()
    hostname = body.hostname or node_id
    token = provisioning.new_bootstrap_token()
    now = plane.clock()
    try:
        params = provisioning.user_data_params(
            node_id=node_id,
            hostname=hostname,
            public_url=plane.settings.public_url,
            jwks_url=jwks_url(plane.settings.public_url),
            token=token,
            manifest=manifest,
            agents=agents,
            request=body,
            ca_certificate=_ca_for_user_data(plane),
        )
        user_data = render(params)
    except InvalidParameter as exc:
        raise ApiError(422, f"cannot render user-data: {exc.field}: {exc.reason}") from None
    except UserDataTooLarge as exc:
        raise ApiError(422, str(exc)) from None
    expires_at = now + plane.settings.bootstrap_token_ttl_s
    dns_name = (await to_thread.run_sync(_node_ca, plane)).dns_name(node_id)
    record = provisioning_store.NewNode(
        node_id=node_id,
        hostname=hostname,
        dns_name=dns_name,
        created_at=now,
        created_by=claims.sub or "",
        params={"agents": list(agents), "swap": body.swap.model_dump(), "port": body.port},
        bootstrap_token_sha256=provisioning.token_digest(token),
        bootstrap_expires_at=expires_at,
    )
    try:
        await to_thread.run_sync(provisioning_store.create_node, plane.engine, record)
    except provisioning_store.NodeExists:
        raise ApiError(409, f"node {node_id} exists") from None
    answer = {
        "node_id": node_id,
        "hostname": hostname,
        "dns_name": dns_name,
        "bootstrap_expires_at": expires_at,
        "agents": list(agents),
        "user_data": user_data,  # holds the bootstrap token: never cached
    }
    return JSONResponse(answer, status_code=201, headers=NO_STORE)


def _bootstrap_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized: a bootstrap token is required")
    return token.strip()


async def _request_key(request: Request) -> PublicKey:
    """The public key of the body's certificate request (a bad one is 422, before anything
    is spent or recorded)."""
    body = await parse_body(request, BootstrapBody)
    try:
        return request_public_key(body.csr)
    except CsrError as exc:
        raise ApiError(422, f"invalid csr: {exc}") from None


async def _sign(
    plane: ControlPlane, public_key: PublicKey, node_id: str, now: float
) -> tuple[provisioning_store.IssuedCertificate, dict[str, str]]:
    """The node's certificate for `public_key`: what to record, and the answer's fields."""
    ca = await to_thread.run_sync(_node_ca, plane)
    signed = ca.sign(public_key, node_id, now, plane.settings.node_cert_ttl_s)
    issued = provisioning_store.IssuedCertificate(
        signed.serial, signed.sha256, signed.not_after, signed.public_key_sha256
    )
    fields = {
        "certificate": signed.pem,
        "ca_certificate": ca.certificate_pem(),
        "dns_name": ca.dns_name(node_id),
    }
    return issued, fields


async def bootstrap(request: Request) -> JSONResponse:
    node_id = request.path_params["node_id"]
    token = _bootstrap_token(request)
    plane = plane_of(request)
    record = await to_thread.run_sync(provisioning_store.bootstrap_record, plane.engine, node_id)
    verdict = provisioning.bootstrap_verdict(record, token, plane.clock())
    if verdict is not provisioning.Verdict.ACCEPT:
        raise ApiError(401, verdict.value)
    now = plane.clock()
    public_key = await _request_key(request)  # 422: the token stays unspent
    issued, fields = await _sign(plane, public_key, node_id, now)
    spent = await to_thread.run_sync(
        provisioning_store.spend_bootstrap_token,
        plane.engine,
        node_id,
        provisioning.token_digest(token),
        now,
        issued,
    )
    if not spent:  # another exchange won, or it expired in between
        raise ApiError(401, provisioning.Verdict.SPENT.value)
    answer = {"callback_token": plane.tokens.mint_callback_token(node_id), **fields}
    return JSONResponse(answer, headers=NO_STORE)


async def renew_certificate(request: Request) -> JSONResponse:
    """A bootstrapped node's new certificate, for a request signed by the key of its
    certificate on record (the callback token vouches for the node, not for a key: see
    control_plane/identity/node_certs.py); the names are the control plane's."""
    node_id = request.path_params["node_id"]
    await require_callback(request, node_id)
    plane = plane_of(request)
    public_key = await _request_key(request)
    record = await to_thread.run_sync(
        provisioning_store.certificate_on_record, plane.engine, node_id
    )
    verdict = renewal_verdict(record, public_key_sha256(public_key))
    if verdict is not RenewalVerdict.SIGN:
        _refuse_renewal(node_id, verdict)
    issued, fields = await _sign(plane, public_key, node_id, plane.clock())
    renewed = await to_thread.run_sync(
        provisioning_store.record_renewal, plane.engine, node_id, issued
    )
    if not renewed:  # a renewal for another key recorded its key first (a row from before 0011)
        _refuse_renewal(node_id, RenewalVerdict.OTHER_KEY)
    return JSONResponse(fields, headers=NO_STORE)


def _refuse_renewal(node_id: str, verdict: RenewalVerdict) -> NoReturn:
    if verdict is RenewalVerdict.NOT_BOOTSTRAPPED:
        raise ApiError(404, verdict.value)
    log.warning("node %s: certificate renewal refused: %s", node_id, verdict.name)
    raise ApiError(403, verdict.value)


async def node_ca_pem(request: Request) -> Response:
    ca = await to_thread.run_sync(_node_ca, plane_of(request))
    pem = ca.certificate_pem()
    return Response(pem, media_type=PEM_TYPE, headers={"Cache-Control": "public, max-age=300"})


async def node_provisioning(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    node_id = request.path_params["node_id"]
    plane = plane_of(request)
    row = await to_thread.run_sync(provisioning_store.provisioning_of, plane.engine, node_id)
    if row is None:
        raise ApiError(404, "no such node")
    return JSONResponse(row)


routes = [
    Route("/api/nodes", create_node, methods=["POST"]),
    Route("/api/nodes/{node_id}/bootstrap", bootstrap, methods=["POST"]),
    Route("/api/nodes/{node_id}/certificate", renew_certificate, methods=["POST"]),
    Route("/api/nodes/{node_id}/provisioning", node_provisioning, methods=["GET"]),
    Route("/api/node-ca.pem", node_ca_pem, methods=["GET"]),
]
