"""The two boot scripts, swap then install, as text built from validated parameters.

Values reach the scripts only through ``shlex.quote`` in variable assignments at the top,
on top of the strict field checks, so no value is ever parsed as shell. Nothing is
written under /tmp: pip's temporary files go to a root-only directory under /var/lib.
"""

from __future__ import annotations

import shlex

from cloud_init.params import SwapSettings

VENV_DIR = "/opt/vm-agent"
SWAP_FILE = "/swapfile"
FSTAB = "/etc/fstab"
SYSCTL_CONF = "/etc/sysctl.d/60-vm-agent-swap.conf"
INSTALL_WORK_DIR = "/var/lib/vm-agent-install"
UNIT_NAME = "vm-agent.service"

_SWAP_BODY = r"""
make_swapfile() {
  rm -f "$swapfile"
  install -m 0600 /dev/null "$swapfile"
  # fallocate is instant; dd is the fallback where it fails or leaves holes swapon refuses.
  if [ "$1" != fallocate ] || ! fallocate -l "${size_mb}M" "$swapfile"; then
    dd if=/dev/zero of="$swapfile" bs=1M count="$size_mb" status=none
  fi
  chmod 0600 "$swapfile"
  mkswap "$swapfile" >/dev/null
}

if ! swapon --show=NAME --noheadings | grep -qxF -- "$swapfile"; then
  make_swapfile fallocate
  if ! swapon "$swapfile"; then
    make_swapfile dd
    swapon "$swapfile"
  fi
fi

# One fstab entry however often this runs.
in_fstab() {
  [ -f "$fstab" ] && awk -v f="$swapfile" '$1 == f { found = 1 } END { exit !found }' "$fstab"
}
if ! in_fstab; then
  printf '%s none swap sw 0 0\n' "$swapfile" >> "$fstab"
fi

sysctl -q -w "vm.swappiness=$swappiness"
printf 'vm.swappiness = %s\n' "$swappiness" > "$sysctl_conf"
"""

_INSTALL_BODY = r"""
export DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
install -d -m 0700 "$work"
export TMPDIR="$work"

# Debian and Ubuntu ship venv and ensurepip in a separate package.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends python3-venv
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade "$requirement"
rm -rf "$work"

systemctl daemon-reload
systemctl enable --now "$unit"
"""


def _header(name: str, assignments: dict[str, str]) -> str:
    lines = [f"# vm-agent: {name}", "set -euo pipefail", "umask 022"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in assignments.items()]
    return "\n".join(lines) + "\n"


def swap_script(swap: SwapSettings) -> str:
    """Create, enable and persist a swap file; safe to run again."""
    return (
        _header(
            "swap",
            {
                "swapfile": SWAP_FILE,
                "size_mb": str(swap.size_mb),
                "swappiness": str(swap.swappiness),
                "fstab": FSTAB,
                "sysctl_conf": SYSCTL_CONF,
            },
        )
        + _SWAP_BODY
    )


def install_script(requirement: str) -> str:
    """Install the vm-agent package into its venv, then enable and start the unit."""
    return (
        _header(
            "install",
            {
                "venv": VENV_DIR,
                "requirement": requirement,
                "work": INSTALL_WORK_DIR,
                "unit": UNIT_NAME,
            },
        )
        + _INSTALL_BODY
    )
