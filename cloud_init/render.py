"""Renders ``#cloud-config`` user-data: the document is built as data and dumped as YAML.

Order on the VM: ``write_files`` (settings, token, unit) runs in cloud-init's init stage;
``runcmd`` runs later, swap first and then the download and install, so pip and the
daemon start with swap in place.
"""

from __future__ import annotations

from typing import Any

import yaml

from cloud_init import scripts
from cloud_init.params import UserDataParams
from cloud_init.unit import unit_text

MAX_USER_DATA_BYTES = 32 * 1024
HEADER = "#cloud-config\n"
ENV_FILE = "/etc/vm-agent/env"
TOKEN_FILE = "/etc/vm-agent/callback-token"  # noqa: S105  (a path, not a secret)
UNIT_FILE = f"/etc/systemd/system/{scripts.UNIT_NAME}"
STATE_DIR = "/var/lib/vm-agent"
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
        "VM_AGENT_CALLBACK_TOKEN_FILE": TOKEN_FILE,
        "VM_AGENT_JWKS_URL": params.jwks_url,
        "VM_AGENT_LISTEN_HOST": LISTEN_HOST,
        "VM_AGENT_LISTEN_PORT": str(params.port),
        "VM_AGENT_STATE_DIR": STATE_DIR,
        "VM_AGENT_LOG_FORMAT": "json",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _secret_file(path: str, content: str) -> dict[str, Any]:
    return {"path": path, "owner": "root:root", "permissions": "0600", "content": content}


def build_document(params: UserDataParams, *, unit: str | None = None) -> dict[str, Any]:
    """The cloud-config as a mapping; ``unit`` replaces the embedded unit (for tests)."""
    runcmd: list[list[str]] = []
    if params.swap.enabled:
        runcmd.append(["bash", "-c", scripts.swap_script(params.swap), "vm-agent-swap"])
    runcmd.append(["bash", "-c", scripts.install_script(params.agent_package), "vm-agent-install"])
    return {
        "hostname": params.hostname,
        "preserve_hostname": False,
        "write_files": [
            _secret_file(ENV_FILE, env_file_text(params)),
            _secret_file(TOKEN_FILE, params.callback_token.get_secret_value() + "\n"),
            {
                "path": UNIT_FILE,
                "owner": "root:root",
                "permissions": "0644",
                "content": unit_text() if unit is None else unit,
            },
        ],
        "runcmd": runcmd,
    }


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
