"""Where the control plane reaches a node's `/v1/ws`, and the node's workspace root.

An address recorded for the node (`PUT /api/nodes/{node}/address`, `vm-agent dev` for its
own daemon, or the node lifecycle from what the provider said of the VM it made) wins;
else a node the control plane created is reached at its certificate's name and the port
its cloud-config gave the daemon. `wss://` is required, except for a node on loopback
(`vm-agent dev`). Pure apart from the small queries.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, insert, select, update

from cloud_init.install import WORKSPACES_DIR
from cloud_init.params import DEFAULT_PORT
from control_plane.identity.node_ca import node_dns_name
from control_plane.providers.base import Vm
from control_plane.storage.db import node_addresses
from control_plane.storage.provisioning_store import node_provisioning


@dataclass(frozen=True)
class Address:
    viewer_url: str
    workspace_root: str
    # the name the node's certificate must carry (None: plain ws:// on loopback)
    tls_name: str | None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_viewer_url(url: str) -> str | None:
    """Why `url` is not a node address the control plane may use; None if it is."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return "viewerUrl must be ws:// or wss://HOST[:PORT]/v1/ws"
    if parts.path != "/v1/ws" or parts.query or parts.fragment:
        return "viewerUrl must end in /v1/ws"
    if parts.scheme == "ws" and not _loopback(parts.hostname):
        return "plain ws:// only for a node on loopback; use wss://"
    return None


def resolve(
    node_id: str,
    domain: str,
    recorded: tuple[str, str] | None,
    provisioned: tuple[str, int] | None,
) -> Address | None:
    """The node's address from what was recorded (url, root) or provisioned (dns name,
    port); None while neither is known. Over TLS the name checked is always the one the
    node CA issues the node's certificate for, whatever host the URL names. Pure."""
    name = node_dns_name(node_id, domain)
    if recorded is not None:
        url, root = recorded
        return Address(url, root, None if url.startswith("ws://") else name)
    if provisioned is not None:
        dns_name, port = provisioned
        return Address(f"wss://{dns_name}:{port}/v1/ws", WORKSPACES_DIR, name)
    return None


def address_of(conn: Connection, node_id: str, domain: str) -> Address | None:
    row = conn.execute(
        select(node_addresses.c.viewer_url, node_addresses.c.workspace_root).where(
            node_addresses.c.node_id == node_id
        )
    ).first()
    recorded = None if row is None else (str(row[0]), str(row[1]))
    prov = conn.execute(
        select(node_provisioning.c.dns_name, node_provisioning.c.params).where(
            node_provisioning.c.node_id == node_id
        )
    ).first()
    provisioned = None
    if prov is not None:
        params = prov.params if isinstance(prov.params, dict) else {}
        port = params.get("port")
        provisioned = (str(prov.dns_name), port if isinstance(port, int) else DEFAULT_PORT)
    return resolve(node_id, domain, recorded, provisioned)


def record_address(
    engine: Engine, node_id: str, viewer_url: str, workspace_root: str, now: float
) -> None:
    values = {"viewer_url": viewer_url, "workspace_root": workspace_root, "updated_at": now}
    with engine.begin() as conn:
        found = conn.execute(
            update(node_addresses).where(node_addresses.c.node_id == node_id).values(**values)
        ).rowcount
        if not found:
            conn.execute(insert(node_addresses).values(node_id=node_id, **values))


def record_vm_address(engine: Engine, node_id: str, vm: Vm, now: float) -> str | None:
    """Records where the provider says the node's VM is (its daemon's port from the
    node's provisioning, or the provider's port in front of it); the URL, or None when
    the provider gave no address (then the provisioned name is used)."""
    with engine.connect() as conn:
        prov = conn.execute(
            select(node_provisioning.c.params).where(node_provisioning.c.node_id == node_id)
        ).first()
    params = prov.params if prov is not None and isinstance(prov.params, dict) else {}
    port = params.get("port")
    url = vm.viewer_url(port if isinstance(port, int) else DEFAULT_PORT)
    if url is None or check_viewer_url(url) is not None:
        return None
    record_address(engine, node_id, url, WORKSPACES_DIR, now)
    return url
