"""The boot scripts as text built from validated parameters: the swap step and the runner.

Values reach the scripts only through ``shlex.quote`` in variable assignments at the top,
on top of the strict field checks, so no value is ever parsed as shell. Nothing is
written under /tmp.

Each step is a script of its own under ``PROVISION_DIR``; ``runcmd`` holds only the
runner, which runs them in order, stops at the first that fails (so nothing after a
failed or refused install runs, the unit included) and logs how long each took.
"""

from __future__ import annotations

import shlex

from cloud_init.params import SwapSettings

PROVISION_DIR = "/var/lib/vm-agent-provision"
TIMINGS_FILE = f"{PROVISION_DIR}/timings"
SWAP_FILE = "/swapfile"
FSTAB = "/etc/fstab"
SYSCTL_CONF = "/etc/sysctl.d/60-vm-agent-swap.conf"

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

_RUNNER_BODY = r"""
: > "$timings"
for step in "${steps[@]}"; do
  started=$(date +%s%N)
  if ! bash "$dir/$step.sh"; then
    echo "vm-agent provision: step $step failed;" \
      "the steps after it did not run and vm-agent was not started" >&2
    printf '%s failed\n' "$step" >> "$timings"
    exit 1
  fi
  ms=$(( ($(date +%s%N) - started) / 1000000 ))
  printf '%s %s\n' "$step" "$ms" >> "$timings"
  echo "vm-agent provision: $step done in ${ms} ms"
done
"""


def header(name: str, assignments: dict[str, str]) -> str:
    lines = [f"# vm-agent: {name}", "set -euo pipefail", "umask 022"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in assignments.items()]
    return "\n".join(lines) + "\n"


def swap_script(swap: SwapSettings) -> str:
    """Create, enable and persist a swap file; safe to run again."""
    return (
        header(
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


def runner_script(steps: list[str]) -> str:
    """Runs ``PROVISION_DIR/<step>.sh`` for each step in order; the first failure ends it."""
    names = " ".join(shlex.quote(step) for step in steps)
    return (
        "# vm-agent: provision (runs each step in order, stops at the first failure)\n"
        "set -uo pipefail\numask 022\n"
        f"dir={shlex.quote(PROVISION_DIR)}\ntimings={shlex.quote(TIMINGS_FILE)}\n"
        f"steps=({names})\n" + _RUNNER_BODY
    )
