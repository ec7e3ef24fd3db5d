"""An agent's environment: an allow-list of the daemon's variables plus its own credentials.

Nothing else of the daemon's environment reaches an agent: not the callback token, not
``VM_AGENT_*`` settings, not whatever a provider's image left in the service's environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DEFAULT_ALLOWED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)

# Prefixes that are never passed on, even when an operator allow-lists a name by mistake.
_NEVER = ("VM_AGENT_", "CONTROL_PLANE_")


def build_agent_env(
    daemon_env: Mapping[str, str],
    own: Mapping[str, str] = {},
    *,
    allowed: Iterable[str] = DEFAULT_ALLOWED,
) -> dict[str, str]:
    """The allow-listed part of ``daemon_env``, then the agent's own variables on top."""
    env = {k: daemon_env[k] for k in allowed if k in daemon_env and not k.startswith(_NEVER)}
    env.update(own)
    return env
