"""At start, say which catalog agents the agent users cannot run, and what to do about it.

Otherwise the first prompt for such an agent fails with exit code 126 from the gate
(`vm-agent-gate: exec: ...: Permission denied`), which tells a person nothing useful.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vm_agent.containment.host import Containment
from vm_agent.containment.runnable import unrunnable_agents
from vm_agent.containment.users import RunAs
from vm_agent.process.agent_env import build_agent_env
from vm_agent.process.catalog import Catalog
from vm_agent.runtime.settings import ENV_PREFIX

log = logging.getLogger(__name__)


def warn_unrunnable_agents(
    catalog: Catalog, containment: Containment, environ: Mapping[str, str]
) -> dict[str, str]:
    """Agent name -> why the pool users cannot run it (each also logged as a warning)."""
    if containment.run_as is not RunAs.POOL:
        return {}
    user = containment.policy.pool.user(0)  # no supplementary groups: all alike
    commands = {name: catalog.get(name).command for name in catalog.names()}
    found = unrunnable_agents(commands, build_agent_env(environ), user.uid, user.gid)
    for name, why in sorted(found.items()):
        log.warning(
            "agent %s cannot be started by the agent users: %s; install it where they can "
            "reach it (e.g. under /usr/local or /opt), or set %sAGENTS_AS_ROOT=1 to run "
            "agents uncontained",
            name,
            why,
            ENV_PREFIX,
        )
    return found
