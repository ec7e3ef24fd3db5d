"""Renders a VM's cloud-config: swap first, then the vm-agent install."""

from cloud_init.params import (
    InvalidParameter,
    SwapSettings,
    UserDataParams,
    params_from_env,
    validate_params,
)
from cloud_init.render import MAX_USER_DATA_BYTES, UserDataTooLarge, build_document, render

__all__ = [
    "MAX_USER_DATA_BYTES",
    "InvalidParameter",
    "SwapSettings",
    "UserDataParams",
    "UserDataTooLarge",
    "build_document",
    "params_from_env",
    "render",
    "validate_params",
]
