"""The install steps after swap, each a script of its own (run in order by the runner):

1. ``vm-agent``: the wheelhouse, fetched and checked against its sha256, then a venv made
   with ``--without-pip`` (Debian's python3 needs no python3-venv for that) and filled by
   pip run from its own wheel with ``--no-index --require-hashes``;
2. ``agents``: the agent bundle, checked the same way, unpacked beside its final place and
   moved there whole;
3. ``agent-users``: ``vm-agent agent-users ensure`` (docs/containment.md), then the firewall
   unit that keeps those users away from the cloud metadata service;
4. ``workspaces``: ``/srv/workspaces`` (docs/containment.md);
5. ``bootstrap-token``: the token file cloud-init wrote is there, root's, 0600;
6. ``start``: enable the unit and start it without waiting (the daemon may wait for the
   control plane as long as it must; cloud-init does not wait with it).

A downloaded file whose sha256 differs is deleted and the step fails, naming the URL and
both hashes; nothing of it is unpacked.
"""

from __future__ import annotations

from cloud_init.agents import AGENTS_DIR, command_name
from cloud_init.firewall import FIREWALL_UNIT
from cloud_init.params import AgentsInstall, AgentUsers, Artifact
from cloud_init.scripts import header

VENV_DIR = "/opt/vm-agent"
INSTALL_WORK_DIR = "/var/lib/vm-agent-install"
UNIT_NAME = "vm-agent.service"
WORKSPACES_DIR = "/srv/workspaces"
BOOTSTRAP_TOKEN_FILE = "/etc/vm-agent/bootstrap-token"  # noqa: S105  (a path, not a secret)
CALLBACK_TOKEN_FILE = "/etc/vm-agent/callback-token"  # noqa: S105
# The CA of a private control plane, trusted for downloads from it and by the daemon.
CONTROL_PLANE_CA_FILE = "/etc/vm-agent/control-plane-ca.pem"

_FETCH = r"""
fetch_verified() {
  local url=$1 want=$2 dest=$3 got
  # No redirects: the file comes from the control plane itself, or not at all; a private
  # control plane is verified against its CA alone.
  curl --fail --silent --show-error --proto '=https,http' --connect-timeout 10 \
    --retry 30 --retry-delay 2 --retry-all-errors --max-time 1800 \
    ${ca_file:+--cacert "$ca_file"} --output "$dest.part" -- "$url"
  got=$(sha256sum "$dest.part" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    rm -f "$dest.part"
    echo "vm-agent: $url has sha256 $got, not the expected $want:" \
      "refused, nothing of it installed" >&2
    return 1
  fi
  mv "$dest.part" "$dest"
}
"""

# A node image (docs/provisioning.md) has run these steps already; each leaves a marker of
# what it installed, and a marker naming this boot's artifacts plus a quick check that the
# install still runs skips the step. Anything else installs as on a plain image.
_WHEELHOUSE_BODY = r"""
marker="$venv/.installed-wheelhouse-sha256"
installed=""
if [ -f "$marker" ]; then read -r installed < "$marker" || true; fi
if [ "$installed" = "$sha256" ] && "$venv/bin/vm-agent" --version >/dev/null 2>&1; then
  echo "vm-agent: wheelhouse $sha256 already installed (node image): skipped"
  exit 0
fi
export TMPDIR="$work" PIP_CONFIG_FILE=/dev/null PIP_NO_INPUT=1 \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
rm -rf "$work"
install -d -m 0700 "$work"
fetch_verified "$url" "$sha256" "$work/wheelhouse.tar"
tar -xf "$work/wheelhouse.tar" -C "$work" --no-same-owner
shopt -s nullglob
pips=("$work"/wheelhouse/wheels/pip-*.whl)
if [ "${#pips[@]}" -ne 1 ]; then
  echo "vm-agent: the wheelhouse must hold exactly one pip wheel" >&2
  exit 1
fi
rm -rf "$venv"
"$python" -m venv --without-pip "$venv"
# pip runs from its own wheel: no pip package, no ensurepip, no index.
"$venv/bin/python" "${pips[0]}/pip" install --quiet --isolated --no-index \
  --find-links "$work/wheelhouse/wheels" --require-hashes --only-binary=:all: \
  -r "$work/wheelhouse/requirements.txt"
"$venv/bin/vm-agent" --version
printf '%s\n' "$sha256" > "$marker"
chmod 0644 "$marker"
rm -rf "$work"
"""

_AGENTS_BODY = r"""
marker_name=.installed-bundle-sha256
read -ra wanted <<< "$commands"
installed=""
if [ -f "$target/$marker_name" ]; then read -r installed < "$target/$marker_name" || true; fi
if [ "$installed" = "$sha256 $commands" ] && "$target/bin/node" --version >/dev/null 2>&1; then
  complete=yes
  for command in "${wanted[@]}"; do
    [ -x "$target/bin/$command" ] || complete=no
  done
  if [ "$complete" = yes ]; then
    echo "vm-agent: agent bundle $sha256 ($commands) already installed (node image): skipped"
    exit 0
  fi
fi
rm -rf "$work" "$target.new"
install -d -m 0700 "$work"
fetch_verified "$url" "$sha256" "$work/agents.tar.gz"
install -d -m 0755 "$target.new"
tar -xzf "$work/agents.tar.gz" -C "$target.new" --no-same-owner
for command in node "${wanted[@]}"; do
  if [ ! -x "$target.new/bin/$command" ]; then
    echo "vm-agent: the agent bundle has no bin/$command" >&2
    exit 1
  fi
done
"$target.new/bin/node" --version
# The marker moves in with the install it describes.
printf '%s %s\n' "$sha256" "$commands" > "$target.new/$marker_name"
chmod 0644 "$target.new/$marker_name"
rm -rf "$target"
mv "$target.new" "$target"
rm -rf "$work"
"""

_AGENT_USERS_BODY = r"""
"$venv/bin/vm-agent" agent-users ensure
if ! command -v nft >/dev/null 2>&1; then
  echo "vm-agent: nft not found (Debian package nftables); the metadata block needs it" >&2
  exit 1
fi
systemctl daemon-reload
systemctl enable --now "$firewall_unit"
"""

# The commands a node needs that a plain cloud image may lack (git: a task's repository is
# cloned, committed to and pushed on the node). Installed from the image's own Debian mirror
# only when missing, so an image that has them (the node image, the VM test's) boots offline.
NODE_COMMANDS = ("git",)

_PACKAGES_BODY = r"""
missing=""
for command in $commands; do
  command -v "$command" >/dev/null 2>&1 || missing="$missing $command"
done
if [ -z "$missing" ]; then
  echo "vm-agent: already installed: $commands"
  exit 0
fi
echo "vm-agent: installing from the image's Debian mirror:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $missing
"""

_WORKSPACES_BODY = r"""
install -d -m 0755 -o root -g root "$workspaces"
"""

_HANDOVER_BODY = r"""
if [ ! -s "$bootstrap_token" ] && [ ! -s "$callback_token" ]; then
  echo "vm-agent: no bootstrap token at $bootstrap_token" >&2
  exit 1
fi
if [ -e "$bootstrap_token" ]; then
  chown root:root "$bootstrap_token"
  chmod 0600 "$bootstrap_token"
fi
"""

_START_BODY = r"""
systemctl daemon-reload
systemctl enable "$unit"
# --no-block: the first start waits for the bootstrap exchange, however long that takes.
systemctl start --no-block "$unit"
"""


def wheelhouse_script(wheelhouse: Artifact, ca_file: str | None = None) -> str:
    values = {
        "url": wheelhouse.url,
        "sha256": wheelhouse.sha256,
        "ca_file": ca_file or "",
        "venv": VENV_DIR,
        "python": "python3",
        "work": f"{INSTALL_WORK_DIR}/wheelhouse",
    }
    return header("vm-agent from the wheelhouse", values) + _FETCH + _WHEELHOUSE_BODY


def agents_script(agents: AgentsInstall, ca_file: str | None = None) -> str:
    values = {
        "url": agents.bundle.url,
        "sha256": agents.bundle.sha256,
        "ca_file": ca_file or "",
        "target": AGENTS_DIR,
        "commands": " ".join(command_name(name) for name in agents.names),
        "work": f"{INSTALL_WORK_DIR}/agents",
    }
    return header("the agents from the bundle", values) + _FETCH + _AGENTS_BODY


def agent_users_script(users: AgentUsers) -> str:
    values = {"venv": VENV_DIR, "firewall_unit": FIREWALL_UNIT}
    comment = f"# uids {users.uid_base}-{users.last_uid}, from the env file\n"
    return header("the agents' users and their firewall", values) + comment + _AGENT_USERS_BODY


def packages_script() -> str:
    """The node's commands (``NODE_COMMANDS``: a Debian package of the same name each)."""
    values = {"commands": " ".join(NODE_COMMANDS)}
    return header("the commands a node needs", values) + _PACKAGES_BODY


def workspaces_script() -> str:
    return header("workspace roots", {"workspaces": WORKSPACES_DIR}) + _WORKSPACES_BODY


def token_script() -> str:
    values = {"bootstrap_token": BOOTSTRAP_TOKEN_FILE, "callback_token": CALLBACK_TOKEN_FILE}
    return header("the bootstrap token", values) + _HANDOVER_BODY


def start_script() -> str:
    return header("start the unit", {"unit": UNIT_NAME}) + _START_BODY
