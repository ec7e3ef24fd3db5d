"""Which agent names a task may ask for: the built-in catalog's, and every name a node
reported in its `ready` (its catalog, `capacity.agents`), so an operator's own entries and
`vm-agent dev`'s fake agents count once a node has them."""

from __future__ import annotations

from sqlalchemy import Engine, select

from control_plane.storage.db import nodes
from vm_agent.process.catalog import builtin_agents


def known_agents(engine: Engine) -> set[str]:
    names = set(builtin_agents())
    with engine.connect() as conn:
        for (capacity,) in conn.execute(select(nodes.c.capacity)):
            agents = capacity.get("agents") if isinstance(capacity, dict) else None
            if isinstance(agents, list):
                names.update(a for a in agents if isinstance(a, str))
    return names
