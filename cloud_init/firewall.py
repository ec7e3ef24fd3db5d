"""The agents' users may not reach the cloud metadata service, nor the daemon's own port
(docs/containment.md).

The daemon's port is for viewers and the control plane; an agent has no business there, and
one on the same machine could otherwise crowd the port's unauthenticated slots, which are
counted per source address (all of loopback's traffic is one address). Locally addressed
traffic leaves through ``lo`` whatever address it names, so ``oifname "lo"`` covers the
node's public address as well as 127.0.0.1, and an agent still reaches port 8080 elsewhere.

An nftables table of its own, replaced whole on every load (so loading twice is the same
as once), applied by a oneshot unit that ``vm-agent.service`` requires: it is in place
before the daemon starts, at every boot.
"""

from __future__ import annotations

from cloud_init.params import AgentUsers

FIREWALL_UNIT = "vm-agent-firewall.service"
RULES_FILE = "/etc/vm-agent/metadata-block.nft"
TABLE = "vm_agent_metadata"
METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fd00:ec2::254"


def rules_text(users: AgentUsers, daemon_port: int) -> str:
    uids = f"{users.uid_base}-{users.last_uid}"
    reject = "counter reject with icmpx admin-prohibited"
    refuse = "counter reject with tcp reset"  # the agent sees "connection refused"
    return (
        "# vm-agent: the agents' users may not reach the cloud metadata service,\n"
        "# nor the daemon's own port on this machine.\n"
        f"table inet {TABLE}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        "\tchain output {\n"
        "\t\ttype filter hook output priority filter; policy accept;\n"
        f"\t\tmeta skuid {uids} ip daddr {METADATA_V4} {reject}\n"
        f"\t\tmeta skuid {uids} ip6 daddr {METADATA_V6} {reject}\n"
        f'\t\tmeta skuid {uids} oifname "lo" tcp dport {daemon_port} {refuse}\n'
        "\t}\n"
        "}\n"
    )


def unit_text() -> str:
    return (
        "# vm-agent: the metadata block for the agents' users (rendered by cloud_init).\n"
        "[Unit]\n"
        "Description=vm-agent: agents' users may not reach the cloud metadata service\n"
        "Before=vm-agent.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart=/usr/sbin/nft -f {RULES_FILE}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
        "RequiredBy=vm-agent.service\n"
    )
