"""Renders ``#cloud-config`` user-data: the document is built as data and dumped as YAML.

Order on the VM: ``write_files`` (settings, the bootstrap token, the control plane's CA
when it is private, the units, the catalog, the step scripts) runs in cloud-init's init
stage; ``runcmd`` runs in the final stage and holds only the runner, which runs the steps
in order: swap, packages, vm-agent, agents, agent-users, workspaces, bootstrap-token, start. A step
that fails stops the run, so the unit never starts after a refused or broken install.
"""

from __future__ import annotations

from typing import Any

import yaml

from cloud_init import firewall, install, scripts
from cloud_init.agents import AGENTS_FILE, catalog_toml
from cloud_init.params import UserDataParams
from cloud_init.unit import unit_text

MAX_USER_DATA_BYTES = 32 * 1024
HEADER = "#cloud-config\n"
ENV_FILE = "/etc/vm-agent/env"
TOKEN_FILE = install.BOOTSTRAP_TOKEN_FILE
UNIT_FILE = f"/etc/systemd/system/{install.UNIT_NAME}"
FIREWALL_UNIT_FILE = f"/etc/systemd/system/{firewall.FIREWALL_UNIT}"
STATE_DIR = "/var/lib/vm-agent"
# Written by the daemon at its first start (docs/provisioning.md), from the bootstrap exchange.
TLS_CERT_FILE = "/etc/vm-agent/node-cert.pem"
TLS_KEY_FILE = "/etc/vm-agent/node-key.pem"
# Debian's bundle (kept up to date by the OS; httpx would use its own certifi otherwise).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Viewers and the control plane reach the daemon from outside the VM.
LISTEN_HOST = "0.0.0.0"  # noqa: S104


class UserDataTooLarge(ValueError):
    def __init__(self, size: int, limit: int = MAX_USER_DATA_BYTES) -> None:
        self.size = size
        self.limit = limit
        self.over = size - limit
        super().__init__(
            f"user-data is {size} bytes, {self.over} bytes over the {limit}-byte limit"
        )


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts, the unit) as literal blocks, readable in the console."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def env_file_text(params: UserDataParams) -> str:
    settings = {
        "VM_AGENT_NODE_ID": params.node_id,
        "VM_AGENT_CONTROL_PLANE_URL": params.control_plane_url,
        "VM_AGENT_BOOTSTRAP_TOKEN_FILE": install.BOOTSTRAP_TOKEN_FILE,
        "VM_AGENT_CALLBACK_TOKEN_FILE": install.CALLBACK_TOKEN_FILE,
        "VM_AGENT_TLS_CERT_FILE": TLS_CERT_FILE,
        "VM_AGENT_TLS_KEY_FILE": TLS_KEY_FILE,
        # the control plane signs it at the bootstrap, and renews it
        "VM_AGENT_TLS_RENEW": "1",
        "VM_AGENT_JWKS_URL": params.jwks_url,
        "VM_AGENT_LISTEN_HOST": LISTEN_HOST,
        "VM_AGENT_LISTEN_PORT": str(params.port),
        "VM_AGENT_STATE_DIR": STATE_DIR,
        "VM_AGENT_LOG_FORMAT": "json",
        "VM_AGENT_AGENT_USERS": str(params.agent_users.count),
        "VM_AGENT_AGENT_UID_BASE": str(params.agent_users.uid_base),
        "VM_AGENT_WORKSPACE_ROOTS": install.WORKSPACES_DIR,
    }
    if params.agents is not None:
        settings["VM_AGENT_AGENTS_FILE"] = AGENTS_FILE
    if params.ca_certificate is not None:
        settings["VM_AGENT_CONTROL_PLANE_CA_FILE"] = install.CONTROL_PLANE_CA_FILE
    if params.agent_start_timeout_s is not None:
        settings["VM_AGENT_START_TIMEOUT_S"] = f"{params.agent_start_timeout_s:g}"
    settings["SSL_CERT_FILE"] = SYSTEM_CA_BUNDLE
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _file(path: str, content: str, permissions: str) -> dict[str, Any]:
    return {"path": path, "owner": "root:root", "permissions": permissions, "content": content}


def steps(params: UserDataParams) -> dict[str, str]:
    """Step name -> script, in the order the runner runs them."""
    found: dict[str, str] = {}
    if params.swap.enabled:
        found["swap"] = scripts.swap_script(params.swap)
    found["packages"] = install.packages_script()
    ca_file = install.CONTROL_PLANE_CA_FILE if params.ca_certificate is not None else None
    found["vm-agent"] = install.wheelhouse_script(params.wheelhouse, ca_file)
    if params.agents is not None:
        found["agents"] = install.agents_script(params.agents, ca_file)
    found["agent-users"] = install.agent_users_script(params.agent_users)
    found["workspaces"] = install.workspaces_script()
    found["bootstrap-token"] = install.token_script()
    found["start"] = install.start_script()
    return found


def build_document(params: UserDataParams, *, unit: str | None = None) -> dict[str, Any]:
    """The cloud-config as a mapping; ``unit`` replaces the embedded unit (for tests)."""
    ordered = steps(params)
    files = [
        _file(ENV_FILE, env_file_text(params), "0600"),
        _file(TOKEN_FILE, params.bootstrap_token.get_secret_value() + "\n", "0600"),
        *(
            [_file(install.CONTROL_PLANE_CA_FILE, params.ca_certificate, "0644")]
            if params.ca_certificate is not None
            else []
        ),
        _file(UNIT_FILE, unit_text() if unit is None else unit, "0644"),
        _file(FIREWALL_UNIT_FILE, firewall.unit_text(), "0644"),
        _file(firewall.RULES_FILE, firewall.rules_text(params.agent_users, params.port), "0644"),
    ]
    if params.agents is not None:
        files.append(_file(AGENTS_FILE, catalog_toml(params.agents.names), "0644"))
    files += [
        _file(f"{scripts.PROVISION_DIR}/{name}.sh", text, "0700") for name, text in ordered.items()
    ]
    # A private CA is not made system-wide (cloud-init's ca_certs): only the download and the
    # daemon trust it, for the control plane alone; agents keep the system's trust.
    document: dict[str, Any] = {"hostname": params.hostname, "preserve_hostname": False}
    document["write_files"] = files
    document["runcmd"] = [
        ["bash", "-c", scripts.runner_script(list(ordered)), "vm-agent-provision"]
    ]
    return document


def render(params: UserDataParams, *, unit: str | None = None) -> str:
    """``#cloud-config`` user-data; :class:`UserDataTooLarge` past 32 KiB."""
    body = yaml.dump(
        build_document(params, unit=unit),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=False,
        width=4096,
    )
    text = HEADER + body
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        raise UserDataTooLarge(size)
    return text
