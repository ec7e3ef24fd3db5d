"""What a session keeps in its registry row (``metadata``), so a daemon restart brings it
back as it was: its owner, reservation, repository and start settings among them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vm_agent.session.repository import repository_fields
from vm_agent.session.usage_meter import session_total

if TYPE_CHECKING:
    from vm_agent.session.session import AgentSession


def description(session: AgentSession) -> dict[str, Any]:
    """The session as ``session/start``, ``session/list`` and ``session/recover`` show it."""
    return {
        "session_id": session.id,
        "agent": session.spec.name,
        "cwd": str(session.cwd),
        "state": session.state.value,
        "acp_session_id": session.acp_session_id,
        "head_seq": session.log.head_seq(session.id),
        "prompt_id": session.machine.prompt_id,
        "error": session.machine.error,
        "reservation": session.reservation,
        "owner": session.owner,
        "usage": session_total(session.outcomes.values()),
        **session._reports.auth_fields(),  # the session package's own
        **repository_fields(session.repository),
    }


def registry_metadata(session: AgentSession) -> dict[str, Any]:
    machine, settings = session.machine, session.settings
    return {
        "load_session": machine.load_session,
        "error": machine.error,
        "reservation": session.reservation,
        "owner": session.owner,
        "repository": session.repository and session.repository.model_dump(mode="json"),
        # The same MCP servers, mode and options again at every recovery, also after a
        # restart; headers and server env are kept as given (the node's state dir is root's).
        "agent_settings": settings and settings.wire(),
        # A start refused for its settings is no session: a restart does not bring it back.
        "start_refused": session.start_refusal is not None,
    }
