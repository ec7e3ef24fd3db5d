"""The shell around the start policy (``start_policy``): what a ``session/start`` or a
``session/recover`` must pass before anything runs.

It counts the sessions being started or recovered right now with the live ones (a claim
is taken with no await after the count, so concurrent starts cannot all pass one cap), asks
the control plane whose a session id is, and reads the registry for whose an ACP session
was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from vm_agent.core.vocabulary import SessionState
from vm_agent.eventlog import EventLog
from vm_agent.session.prompt_book import SessionRefused
from vm_agent.session.start_policy import (
    AcpRecord,
    CapReached,
    NotYours,
    Recorded,
    SessionDetailsProvider,
    StartPolicy,
    cap_refusal,
    load_refusal,
)

log = logging.getLogger(__name__)

# A session in these states has no agent process and never gets one without a recover.
AT_REST = (SessionState.STOPPED, SessionState.ERROR)


class StartGate:
    def __init__(
        self, policy: StartPolicy, session_details: SessionDetailsProvider | None = None
    ) -> None:
        self.policy = policy
        self.session_details = session_details
        self._claims: dict[str, str | None] = {}  # session id -> owner, while it starts

    def claimed(self, session_id: str) -> bool:
        return session_id in self._claims

    def check_cap(
        self,
        sessions: Iterable[tuple[str, SessionState, str | None]],
        owner: str | None,
        *,
        node_scope: bool,
    ) -> None:
        """Raises ``CapReached`` when one more live session of ``owner`` is one too many
        (``sessions``: the id, state and owner of each session of the daemon)."""
        live = {sid: who for sid, state, who in sessions if state not in AT_REST}
        # A recovery's claim and its session, once recovering, are one session.
        claims = [who for sid, who in self._claims.items() if sid not in live]
        refusal = cap_refusal(
            self.policy,
            live_owners=[*live.values(), *claims],
            owner=owner,
            node_scope=node_scope,
        )
        if refusal is not None:
            raise CapReached(refusal)

    @contextmanager
    def claim(self, session_id: str, owner: str | None) -> Iterator[None]:
        """Counts the session as live while it starts (take it right after ``check_cap``)."""
        self._claims[session_id] = owner
        try:
            yield
        finally:
            self._claims.pop(session_id, None)

    async def recorded(self, session_id: str, agent: str) -> Recorded | None:
        """What the control plane recorded for ``session_id`` (None: it made no such
        session, or there is no control plane); refuses the start when it cannot be asked."""
        if self.session_details is None:
            return None
        try:
            return await self.session_details(session_id, agent)
        except Exception as exc:
            log.warning(
                "session %s: the control plane's record is unavailable: %s", session_id, exc
            )
            raise SessionRefused(
                f"the control plane could not confirm whose session {session_id!r} is; try again"
            ) from None

    async def check_load(
        self,
        log: EventLog,
        sessions: Iterable[AcpRecord],
        acp_session_id: str,
        *,
        agent: str,
        owner: str | None,
    ) -> None:
        """Raises ``NotYours`` unless the registry (the log, and ``sessions``: this daemon's)
        says only sessions of ``owner`` and ``agent`` had ``acp_session_id``."""
        known = [
            AcpRecord(r.acp_session_id, r.agent, _owner_of(r.metadata))
            for r in await log.list_sessions()
        ]
        known += sessions
        refusal = load_refusal(acp_session_id, agent=agent, owner=owner, known=known)
        if refusal is not None:
            raise NotYours(refusal)


def _owner_of(metadata: dict[str, Any]) -> str | None:
    owner = metadata.get("owner")
    return owner if isinstance(owner, str) else None
