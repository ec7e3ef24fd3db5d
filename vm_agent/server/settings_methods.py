"""``session/settings``, ``session/set_mode`` and ``session/set_config_option``: a
session's modes and config options for its viewers (docs/viewer-api.md). Reading them
needs the ``read`` scope, changing them ``write``; both a session the token reaches. The
change is the agent's to make (``vm_agent.session.agent_settings`` relays and records it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from pydantic import Field, StrictBool, StrictStr

from vm_agent.server import errors
from vm_agent.server import params as p
from vm_agent.session import agent_settings
from vm_agent.session.session import AgentSession, SessionRefused

Handler = Callable[[Any], Awaitable[Any]]
Lookup = Callable[[str], AgentSession]

_ID = Field(min_length=1, max_length=256)


class SetModeParams(p.SessionParams):
    mode_id: str = _ID


class SetConfigOptionParams(p.SessionParams):
    config_id: str = _ID
    # A select option's value id, or a boolean option's value (ACP's two kinds).
    value: StrictStr | StrictBool

    def change(self) -> dict[str, Any]:
        """The ACP params (bar the session id) for the agent."""
        kind = {"type": "boolean"} if isinstance(self.value, bool) else {}
        return {"configId": self.config_id, "value": self.value, **kind}


def handlers(lookup: Lookup, subject: Callable[[], str]) -> dict[str, Handler]:
    """The methods, for ``ViewerMethods``' table; ``lookup`` checks the token's reach,
    ``subject`` is who asks (recorded with the change)."""

    async def settings(raw: Any) -> dict[str, Any]:
        args = p.parse(p.SessionParams, "session/settings", raw)
        return agent_settings.offered(lookup(args.session_id))

    async def relay(session: AgentSession, method: str, change: dict[str, Any]) -> Any:
        try:
            # Shielded: a viewer leaving must not leave a change made but unrecorded.
            with anyio.CancelScope(shield=True):
                return await agent_settings.change(session, method, change, subject())
        except SessionRefused as exc:
            raise errors.refused(str(exc)) from None

    async def set_mode(raw: Any) -> dict[str, Any]:
        args = p.parse(SetModeParams, "session/set_mode", raw)
        await relay(lookup(args.session_id), "session/set_mode", {"modeId": args.mode_id})
        return {}

    async def set_config_option(raw: Any) -> dict[str, Any]:
        args = p.parse(SetConfigOptionParams, "session/set_config_option", raw)
        session = lookup(args.session_id)
        answer = await relay(session, "session/set_config_option", args.change())
        return {"configOptions": answer.get("configOptions", [])}

    return {
        "session/settings": settings,
        "session/set_mode": set_mode,
        "session/set_config_option": set_config_option,
    }
