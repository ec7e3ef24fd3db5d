"""What the daemon trusts for the control plane (bootstrap, callbacks, JWKS).

With ``CONTROL_PLANE_CA_FILE`` (a private control plane: the cloud-config writes its CA),
that CA alone, and for these connections alone: the VM's system trust, which agents use
for their own HTTPS, is left as the image has it. Without it, the system's trust (httpx's
default, which honours ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TrustError(Exception):
    """The CA file cannot be used; one line for a person."""


def control_plane_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except FileNotFoundError:
        raise TrustError(f"VM_AGENT_CONTROL_PLANE_CA_FILE: {ca_file} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TrustError(
            f"VM_AGENT_CONTROL_PLANE_CA_FILE: {ca_file} is not a usable PEM CA: {reason}"
        ) from None
