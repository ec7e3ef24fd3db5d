"""A session's modes and config options: what its agent offered, and changes a viewer asks
for (``session/set_mode``, ``session/set_config_option``, docs/viewer-api.md), relayed to
the agent process serving the session now and recorded, once the agent took them, as an
``agent.settings_changed`` event in the session's log (so every viewer sees who changed
what). The agent's refusal (a mode it does not offer, a method it does not have) is its
own JSON-RPC error, passed on as it is.

A recovery starts a new agent process in the agent's defaults: the last mode and each
option's last value set through here are set again before it takes prompts
(``run_reports``). After a daemon restart they are not (they are in the log only).
"""

from __future__ import annotations

from typing import Any

from vm_agent.jsonrpc.connection import PeerClosed
from vm_agent.session.prompt_book import SessionRefused
from vm_agent.session.run_reports import SETTINGS_EVENT as EVENT
from vm_agent.session.session import AgentSession

__all__ = ["EVENT", "change", "offered"]


def offered(session: AgentSession) -> dict[str, Any]:
    """``modes`` and ``configOptions`` as the current agent process offered them (and as
    changes since made them): empty when there is no process or it offered none."""
    run = session._run  # the session package's own (no public handle on the run)
    client = run.client if run is not None and not run.done.is_set() else None
    return dict(client.offered) if client is not None else {}


async def change(
    session: AgentSession, method: str, change: dict[str, Any], by: str
) -> dict[str, Any]:
    """Relays one change to the agent (``method``: ``session/set_mode`` with ``modeId``, or
    ``session/set_config_option`` with ``configId`` and ``value``); returns the agent's
    answer. SessionRefused when no agent process serves the session; the agent's own
    JsonRpcError when it refuses."""
    run, acp_id = session._run, session.acp_session_id
    client = run.client if run is not None and not run.done.is_set() else None
    if client is None or acp_id is None:
        raise SessionRefused(f"no agent process serves the session now ({session.state.value})")
    try:
        if method == "session/set_mode":
            await client.set_mode(acp_id, str(change["modeId"]))
            answer: Any = {}
        else:
            answer = await client.set_config_option(acp_id, change)
    except PeerClosed:
        raise SessionRefused("the agent process went away before it answered") from None
    what = "mode" if method == "session/set_mode" else str(change.get("configId"))
    session._reports.changes[(method, what)] = change  # re-applied by a recovery
    await session.log.append(session.id, EVENT, {"method": method, "params": change, "by": by})
    return answer if isinstance(answer, dict) else {}
