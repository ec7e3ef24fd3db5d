"""Whether the viewer listener may speak plain ``ws://``: facts in, a verdict out (pure).

Viewer tokens carry a ``write`` scope that is code execution on the VM, so they must not
cross a network in clear: without TLS the listener binds loopback only, unless the operator
says ``VM_AGENT_ALLOW_PLAINTEXT=1`` explicitly (e.g. behind a TLS-terminating proxy on the
same host), which the daemon logs as a warning at start.
"""

from __future__ import annotations

import ipaddress
from enum import Enum

TLS_VARIABLES = "VM_AGENT_TLS_CERT_FILE and VM_AGENT_TLS_KEY_FILE"


class ListenerMode(Enum):
    TLS = "tls"
    PLAIN_LOOPBACK = "plain-loopback"
    PLAIN_EXPOSED = "plain-exposed"  # allowed explicitly: warned about at start
    REFUSED = "refused"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine (a name other than
    ``localhost``, or the wildcard, does not)."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def listener_mode(host: str, *, tls: bool, allow_plaintext: bool) -> ListenerMode:
    if tls:
        return ListenerMode.TLS
    if is_loopback(host):
        return ListenerMode.PLAIN_LOOPBACK
    return ListenerMode.PLAIN_EXPOSED if allow_plaintext else ListenerMode.REFUSED


def refusal_message(host: str) -> str:
    return (
        f"VM_AGENT_LISTEN_HOST {host!r} is not a loopback address and the listener has no "
        f"TLS: set {TLS_VARIABLES}, or VM_AGENT_ALLOW_PLAINTEXT=1 to serve plain ws:// anyway"
    )
