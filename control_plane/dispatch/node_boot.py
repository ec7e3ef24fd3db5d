"""What a node the lifecycle creates boots from: the plane's boot kit (its URL, artifacts
and CA) and each node's user-data, with a fresh single-use bootstrap token whose digest is
recorded in the node's provisioning row (made, or its token replaced while the node has not
bootstrapped: a create sent again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from cloud_init import render
from control_plane.provisioning import userdata
from control_plane.provisioning.artifacts.manifest import Manifest
from control_plane.storage import provisioning_store
from control_plane.storage.machines import Machine


@dataclass(frozen=True)
class BootKit:
    """What a node's user-data is made of (the plane's URL, its artifacts, its CA)."""

    public_url: str
    jwks_url: str
    manifest: Callable[[], Manifest]
    ca_certificate: str | None
    dns_name: Callable[[str], str]
    bootstrap_ttl_s: float


def node_user_data(
    engine: Engine, kit: BootKit, request: userdata.NodeRequest, m: Machine, now: float
) -> str:
    """User-data with a fresh bootstrap token, its provisioning row made (or replaced)."""
    manifest = kit.manifest()
    token = userdata.new_bootstrap_token()
    expires = now + kit.bootstrap_ttl_s
    agents = userdata.chosen_agents(None, manifest)
    params = userdata.user_data_params(
        node_id=m.node_id,
        hostname=m.node_id,
        public_url=kit.public_url,
        jwks_url=kit.jwks_url,
        token=token,
        manifest=manifest,
        agents=agents,
        request=request,
        ca_certificate=kit.ca_certificate,
    )
    rendered = render(params)
    record = provisioning_store.NewNode(
        node_id=m.node_id,
        hostname=m.node_id,
        dns_name=kit.dns_name(m.node_id),
        created_at=now,
        created_by=f"lifecycle:{m.owner}",
        params={
            "agents": list(agents),
            "swap": request.swap.model_dump(),
            "port": request.port,
        },
        bootstrap_token_sha256=userdata.token_digest(token),
        bootstrap_expires_at=expires,
    )
    try:
        provisioning_store.create_node(engine, record)
    except provisioning_store.NodeExists:
        if not provisioning_store.refresh_bootstrap_token(
            engine, m.node_id, record.bootstrap_token_sha256, expires
        ):
            raise RuntimeError("the node bootstrapped already: not made again") from None
    return rendered
