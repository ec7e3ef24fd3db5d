"""What goes into the VM image, as data: the package list, the files written over the tree.

Pure: the cache key is a hash of this data (plus the builder's own source), so a change to
either builds a new image and an unchanged recipe reuses the cached one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SUITE = "bookworm"

# What the harness needs (qemu-guest-agent, curl) and what the product's cloud-config uses
# (python3-venv for the install, nftables for the metadata rule, sudo and dbus for
# cloud-init's user and hostname modules). No nodejs: the agents' Node comes in pv's bundle.
PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "linux-image-amd64",
    "cloud-init",
    "python3",
    "python3-venv",
    "udev",
    "netbase",
    "ifupdown",
    "isc-dhcp-client",
    "ca-certificates",
    "nftables",
    "procps",
    "iproute2",
    "qemu-guest-agent",
    "dbus",
    "sudo",
    "curl",
    "xz-utils",
    # what the cloud-config's packages step would otherwise install (the guest is offline)
    "git",
)

# The root is the whole virtio disk (no partition table), found by name at boot.
FSTAB = "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"

# Only lo here: cloud-init's fallback network config writes the NIC (ens2) into
# interfaces.d. Naming the NIC here as well made networking.service fail (VM-NOTES).
INTERFACES = (
    "# lo only; cloud-init writes the NIC's stanza into interfaces.d\n"
    "auto lo\n"
    "iface lo inet loopback\n"
    "\n"
    "source /etc/network/interfaces.d/*\n"
)

# Timers and jobs that would only burn the guest's emulated CPU (or fail: the guest has
# no registry to reach) while a test runs; e2scrub_reap took 20 s of a loaded boot.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
)


# cloud-init's locale module sets en_US.UTF-8 on Debian: generated in the image, as a
# cloud image has it, so the module neither fails nor compiles locales under emulation
LOCALE_GEN = "en_US.UTF-8 UTF-8\n"

# run in the tree (chroot) after the files are written
CHROOT_COMMANDS: tuple[tuple[str, ...], ...] = (("locale-gen",),)


@dataclass(frozen=True)
class Recipe:
    suite: str = SUITE
    variant: str = "important"
    packages: tuple[str, ...] = PACKAGES
    files: Mapping[str, str] = field(
        default_factory=lambda: {
            "etc/fstab": FSTAB,
            "etc/network/interfaces": INTERFACES,
            "etc/locale.gen": LOCALE_GEN,
        }
    )
    chroot_commands: tuple[tuple[str, ...], ...] = CHROOT_COMMANDS
    masked_units: tuple[str, ...] = MASKED_UNITS
    # sparse: only the blocks the tree uses are written; the rest is room for what
    # cloud-init installs (wheelhouse, agent bundle, swap file) in the run's overlay
    disk_size: str = "6G"

    def describe(self) -> dict[str, object]:
        return {
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(self.packages),
            "files": dict(sorted(self.files.items())),
            "masked_units": sorted(self.masked_units),
            "chroot_commands": [list(c) for c in self.chroot_commands],
            "disk_size": self.disk_size,
        }


def cache_key(recipe: Recipe, builder_source: bytes, sources: str) -> str:
    """A short stable name for the image this recipe, builder and apt sources make."""
    digest = hashlib.sha256()
    digest.update(json.dumps(recipe.describe(), sort_keys=True).encode())
    digest.update(b"\0builder\0")
    digest.update(builder_source)
    digest.update(b"\0sources\0")
    digest.update(sources.encode())
    return f"{recipe.suite}-{digest.hexdigest()[:16]}"


DEBIAN_KEYRING = "debian-archive-keyring"


def debian_stanzas(deb822: str, suite: str) -> list[str]:
    """The deb822 stanzas of a sources file that serve Debian's `suite` (and its -updates,
    -security), signed by Debian's archive keyring; other repositories are left out."""
    kept = []
    for stanza in deb822.split("\n\n"):
        lines = [line for line in stanza.splitlines() if line and not line.startswith("#")]
        fields = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        suites = fields.get("suites", "").split()
        if (
            fields.get("types", "").split()[:1] == ["deb"]
            and DEBIAN_KEYRING in fields.get("signed-by", "")
            and suites
            and all(s == suite or s.startswith(f"{suite}-") for s in suites)
        ):
            kept.append("\n".join(lines))
    return kept


def sources_for(files: Iterable[str], suite: str) -> str:
    """The host's Debian sources for `suite` as one deb822 text ('' when it has none, and
    mmdebstrap then uses its own default mirrors)."""
    stanzas = [s for text in files for s in debian_stanzas(text, suite)]
    return "\n\n".join(stanzas) + "\n" if stanzas else ""
