"""Renders a VM's cloud-config: swap first, then vm-agent and its agents from pinned,
hash-checked artifacts, the agents' users, the bootstrap token, then the unit."""

from cloud_init.params import (
    AgentsInstall,
    AgentUsers,
    Artifact,
    InvalidParameter,
    SwapSettings,
    UserDataParams,
    params_from_env,
    validate_params,
)
from cloud_init.render import MAX_USER_DATA_BYTES, UserDataTooLarge, build_document, render

__all__ = [
    "MAX_USER_DATA_BYTES",
    "AgentUsers",
    "AgentsInstall",
    "Artifact",
    "InvalidParameter",
    "SwapSettings",
    "UserDataParams",
    "UserDataTooLarge",
    "build_document",
    "params_from_env",
    "render",
    "validate_params",
]
