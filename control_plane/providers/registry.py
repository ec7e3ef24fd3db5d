"""Which driver speaks for a provider, with whose credential, and this plane's label.

A user's own credential (bring your own cloud, sealed in the database) comes first; the
platform's account (a setting) otherwise; with neither, no VM is made and the node's
row says why. `qemu` has no credential: its VMs run on the operator's own machine, so it
is offered once the operator configured it (`CONTROL_PLANE_QEMU_IMAGE`), never on a
user's say, and one driver instance serves every node (it remembers a KVM that failed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from control_plane.identity.sealing import Sealer
from control_plane.providers import credentials, dev
from control_plane.providers.base import Provider
from control_plane.providers.hetzner import API_ENDPOINT, DEFAULT_IMAGE, HetznerProvider
from control_plane.providers.qemu.driver import QemuProvider, QemuSettings

# what stands for a credential where none is needed (never sent anywhere)
LOCAL = "local"


class HetznerSettings(BaseSettings):
    """CONTROL_PLANE_HETZNER_* variables (docs/control-plane.md)."""

    model_config = SettingsConfigDict(env_prefix="CONTROL_PLANE_HETZNER_", extra="ignore")

    token: SecretStr | None = None  # the platform's own account; users may bring theirs
    endpoint: str = API_ENDPOINT  # a stand-in's, in tests
    image: str = DEFAULT_IMAGE
    location: str | None = None
    timeout_s: float = 30.0


DriverFactory = Callable[[str, str], Provider | None]


def plane_id(public_url: str) -> str:
    """A label value naming this control plane (the same for all its replicas)."""
    return "cp-" + hashlib.sha256(public_url.encode()).hexdigest()[:12]


def default_drivers(hetzner: HetznerSettings, qemu: QemuSettings | None = None) -> DriverFactory:
    local = QemuProvider(qemu) if qemu is not None and qemu.configured else None

    def make(provider: str, credential: str) -> Provider | None:
        if provider == "qemu":
            return local
        if provider == "hetzner":
            return HetznerProvider(
                credential, endpoint=hetzner.endpoint, timeout_s=hetzner.timeout_s
            )
        return None  # no driver for it (yet)

    return make


def with_dev_node(drivers: DriverFactory, state_file: Path) -> DriverFactory:
    """``drivers`` and the ``dev`` provider (the daemon of `vm-agent dev`, recorded in
    ``state_file``): what `vm-agent dev` runs its control plane with."""

    def make(provider: str, credential: str) -> Provider | None:
        if provider == dev.NAME:
            return dev.DevProvider(state_file)
        return drivers(provider, credential)

    return make


def platform_credential(
    provider: str, hetzner: HetznerSettings, qemu: QemuSettings | None = None
) -> str | None:
    if provider == dev.NAME:
        return LOCAL  # it needs none; a plane without the dev driver makes no dev node
    if provider == "qemu":
        return LOCAL if qemu is not None and qemu.configured else None
    if provider == "hetzner" and hetzner.token is not None:
        return hetzner.token.get_secret_value()
    return None


def credential_for(
    engine: Engine,
    sealer: Sealer,
    owner: str,
    provider: str,
    hetzner: HetznerSettings,
    *,
    qemu: QemuSettings | None = None,
) -> str | None:
    """The owner's own credential for ``provider``, else the platform's, else None."""
    if provider == "qemu":  # the operator's machine: no user's credential opens it
        return platform_credential(provider, hetzner, qemu)
    own = credentials.credential_for(engine, sealer, owner, provider) if owner else None
    return own if own is not None else platform_credential(provider, hetzner)


def platform_accounts(
    hetzner: HetznerSettings, qemu: QemuSettings | None = None
) -> list[tuple[str, str]]:
    """The platform's own (provider, credential) pairs, for the orphan sweep."""
    pairs = [(p, platform_credential(p, hetzner, qemu)) for p in ("hetzner", "qemu")]
    return [(p, cred) for p, cred in pairs if cred is not None]


def missing_driver_reason(provider: str) -> str:
    if provider == "qemu":
        return "qemu is not set up on this control plane (CONTROL_PLANE_QEMU_IMAGE)"
    return f"no credentials for {provider}: PUT /api/providers/{provider}/credentials"
