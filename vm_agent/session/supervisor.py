"""The supervisor: owns every session of the daemon, their tasks, and their shutdown.

Sessions are independent: each runs in its own task tree, so one session's crash loop,
hang or flood never stops another (they share only the event log's group commit).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vm_agent.acp.permissions import AskPolicy, PermissionPolicy
from vm_agent.common.exc import first_leaf
from vm_agent.common.redact import Redactor
from vm_agent.containment.host import Containment, machine_memory_mb
from vm_agent.containment.session import SessionContainment
from vm_agent.core.vocabulary import SessionState
from vm_agent.eventlog import EventLog
from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.process.catalog import AgentSpec, Catalog
from vm_agent.session.config import CredentialsProvider, SessionConfig
from vm_agent.session.restore import close_orphan_prompt, load_outcomes
from vm_agent.session.session import AgentSession, SessionRefused
from vm_agent.session.start_gate import AT_REST, StartGate
from vm_agent.session.start_policy import (
    AcpRecord,
    SessionDetailsProvider,
    StartPolicy,
    effective_reservation,
    owner_from_record,
)
from vm_agent.session.start_settings import (
    StartSettings,
    check_env_for,
    check_secrets_for,
    check_transports_for,
)

log = logging.getLogger(__name__)

_SESSION_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class UnknownSession(KeyError):
    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"unknown session {self.session_id!r}"


class _Started(TaskStatus[None]):
    """Passes ``started()`` on, so the supervisor knows whether the session got that far."""

    def __init__(self, on_started: Callable[[None], None]) -> None:
        self._on_started = on_started

    def started(self, value: None = None) -> None:
        self._on_started(value)


class Supervisor:
    def __init__(
        self,
        *,
        log: EventLog,
        catalog: Catalog,
        config: SessionConfig,
        redactor: Redactor,
        credentials: CredentialsProvider | None = None,
        permission_policy: Callable[[], PermissionPolicy] = AskPolicy,
        containment: Containment | None = None,
        policy: StartPolicy | None = None,
        session_details: SessionDetailsProvider | None = None,
    ) -> None:
        """``containment``: run agents confined (the daemon always gives one); without it
        they run as this process's user, in process groups, in any existing directory.
        ``policy``: caps and reservation bounds; ``session_details``: what the control
        plane recorded for a session id it made (None: no control plane to ask)."""
        self.containment = containment
        self.gate = StartGate(policy or machine_policy(), session_details)
        self.log = log
        self.catalog = catalog
        self.config = config
        self.redactor = redactor
        self.credentials = credentials
        self.permission_policy = permission_policy
        self.sessions: dict[str, AgentSession] = {}
        self._tg: TaskGroup | None = None
        # Set once the control plane says this node drains (never unset): no new session
        # starts; the running ones finish. `drained`: the daemon told the control plane
        # nothing runs (the node may be deleted any moment): no new prompt either.
        self.draining = False
        self.drained = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Owns the sessions' tasks until cancelled (call ``shutdown`` first for a clean stop)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def get(self, session_id: str) -> AgentSession:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(session_id) from None

    def describe_all(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values()]

    async def start_session(
        self,
        agent: str,
        cwd: str | Path,
        *,
        session_id: str | None = None,
        load_acp_session: str | None = None,
        permissions: PermissionPolicy | None = None,
        reservation: str | dict[str, Any] | None = None,
        owner: str | None = None,
        node_scope: bool = False,
        repository: RepositorySpec | None = None,
        settings: StartSettings | None = None,
    ) -> AgentSession:
        """Starts a session (see ``start_policy`` for what is refused and how).

        ``node_scope``: the control plane's own connection asks (held to the node's cap
        only, and it may start a session it made without naming the owner)."""
        self._check_not_draining()
        spec = self.catalog.get(agent)
        check_env_for(settings, spec, self.config.env_allow)  # ValueErrors: -32602
        check_transports_for(settings, spec)
        check_secrets_for(settings, self.config.mcp_secrets is not None)
        path = Path(cwd)
        sid = session_id or f"s-{uuid.uuid4().hex[:16]}"
        if not sid or len(sid) > 128 or not set(sid) <= _SESSION_ID_CHARS:
            raise ValueError("session_id must be 1-128 characters of [A-Za-z0-9._-]")
        self._check_free(sid)
        recorded = None
        if session_id is not None:
            recorded = await self.gate.recorded(sid, spec.name)
            if recorded is not None:
                owner = owner_from_record(
                    recorded, agent=spec.name, owner=owner, node_scope=node_scope
                )
            self._check_free(sid)  # again: another start may have taken it meanwhile
        # No await between the cap's check and the claim: concurrent starts count.
        self._check_not_draining()  # again: the drain may have come meanwhile
        self.gate.check_cap(self._states(), owner, node_scope=node_scope)
        reservation = effective_reservation(reservation, recorded, self.policy)
        with self.gate.claim(sid, owner):
            if load_acp_session is not None:
                known = [
                    AcpRecord(s.acp_session_id, s.spec.name, s.owner)
                    for s in self.sessions.values()
                ]
                await self.gate.check_load(
                    self.log, known, load_acp_session, agent=spec.name, owner=owner
                )
            return await self._start(
                sid,
                spec,
                path,
                load_acp_session=load_acp_session,
                permissions=permissions,
                reservation=reservation,
                owner=owner,
                repository=repository,
                settings=settings,
            )

    async def drop_refused(self, session: AgentSession) -> None:
        """A session whose agent could not take its start settings: ended (it closes itself)
        and forgotten (its registry row says so: a restart does not bring it back)."""
        session.close()
        await session.stopped_for_good.wait()
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    async def recover_session(self, session: AgentSession, *, node_scope: bool = False) -> None:
        """``session.recover()``, counted against the caps like a start (a session at rest
        that comes back is one more live session)."""
        if session.state not in AT_REST or self.gate.claimed(session.id):
            await session.recover()  # the session's machine refuses what does not fit
            return
        self._check_not_draining()  # a session at rest coming back is a new live one
        self.gate.check_cap(self._states(), session.owner, node_scope=node_scope)
        with self.gate.claim(session.id, session.owner):
            await session.recover()

    def _states(self) -> list[tuple[str, SessionState, str | None]]:
        return [(s.id, s.state, s.owner) for s in self.sessions.values()]

    def _check_not_draining(self) -> None:
        if self.draining:
            raise SessionRefused(
                "this node is draining: it takes no new sessions (start it on another node)"
            )

    def _check_free(self, sid: str) -> None:
        if sid in self.sessions or self.gate.claimed(sid):
            raise ValueError(f"session {sid!r} exists already")

    @property
    def policy(self) -> StartPolicy:
        return self.gate.policy

    @property
    def session_details(self) -> SessionDetailsProvider | None:
        return self.gate.session_details

    @session_details.setter
    def session_details(self, provider: SessionDetailsProvider | None) -> None:
        """Set before any session starts (the daemon: from its control link)."""
        self.gate.session_details = provider

    async def _start(
        self,
        sid: str,
        spec: AgentSpec,
        path: Path,
        *,
        load_acp_session: str | None,
        permissions: PermissionPolicy | None,
        reservation: str | dict[str, Any] | None,
        owner: str | None,
        repository: RepositorySpec | None = None,
        settings: StartSettings | None = None,
    ) -> AgentSession:
        contained: SessionContainment | None = None
        if self.containment is not None:
            # Refusals (a cwd outside the roots, no free agent user) are ValueErrors.
            contained = await self.containment.prepare(
                sid, owner=owner, reservation=reservation, cwd=str(path)
            )
            path = contained.workdir
        elif not path.is_absolute():
            raise ValueError(f"cwd must be an absolute path, not {str(path)!r}")
        elif not await anyio.Path(path).is_dir():
            raise ValueError(f"cwd {str(path)!r} is not a directory")
        session = AgentSession(
            session_id=sid,
            spec=spec,
            cwd=path,
            log=self.log,
            config=self.config,
            permissions=permissions or self.permission_policy(),
            redactor=self.redactor,
            credentials=self.credentials,
            load_acp_session=load_acp_session,
            reservation=reservation,
            owner=owner,
            containment=contained,
            repository=repository,
            settings=settings,
        )
        self.sessions[sid] = session
        try:
            await self._group.start(self._run_session, session)
        except BaseException:
            # It never started: the caller hears why; it is not listed half-made.
            if self.sessions.get(sid) is session:
                del self.sessions[sid]
            raise
        return session

    async def _run_session(
        self, session: AgentSession, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """A session's life; what goes wrong inside it (a file it cannot open, a process it
        cannot spawn) ends that session only, never the supervisor and the daemon."""
        started = False

        def ready(value: None = None) -> None:
            nonlocal started
            started = True
            task_status.started(value)

        try:
            await session.run(task_status=_Started(ready))
        except Exception as exc:
            if not started:
                raise  # start_session's caller gets the error
            log.exception("session %s failed and is stopped; the others go on", session.id)
            leaf = first_leaf(exc)
            await session.abandon(f"internal error: {type(leaf).__name__}: {leaf}")
        finally:
            # Refused for its settings: no session, also when its starter left meanwhile.
            if session.start_refusal is not None and self.sessions.get(session.id) is session:
                del self.sessions[session.id]

    async def restore(self, *, recover: bool = False) -> list[AgentSession]:
        """Brings back the sessions an earlier daemon left in the log, as stopped sessions.

        A prompt that was running when that daemon died gets its one outcome now.
        """
        restored: list[AgentSession] = []
        for record in await self.log.list_sessions():
            if record.session_id in self.sessions or record.metadata.get("start_refused"):
                continue
            try:
                spec = self.catalog.get(record.agent)
            except KeyError:
                log.warning(
                    "session %s: agent %r is no longer in the catalog",
                    record.session_id,
                    record.agent,
                )
                continue
            contained: SessionContainment | None = None
            if self.containment is not None:
                try:
                    contained = await self.containment.prepare(
                        record.session_id,
                        owner=record.metadata.get("owner"),
                        reservation=record.metadata.get("reservation"),
                        cwd=record.cwd,
                    )
                except ValueError as exc:  # never run it unconfined: leave it out
                    log.warning("session %s: not restored: %s", record.session_id, exc)
                    continue
            await close_orphan_prompt(self.log, record.session_id, record.state)
            session = AgentSession(
                session_id=record.session_id,
                spec=spec,
                cwd=Path(record.cwd),
                log=self.log,
                config=self.config,
                permissions=self.permission_policy(),
                redactor=self.redactor,
                credentials=self.credentials,
                restored=record,
                containment=contained,
            )
            await load_outcomes(self.log, session)
            self.sessions[record.session_id] = session
            await self._group.start(self._run_session, session)
            restored.append(session)
            if recover and session.restorable and record.state not in ("stopped", "error"):
                try:
                    await session.recover()
                except SessionRefused as exc:  # one session must not stop the daemon's start
                    log.warning("session %s: not recovered at start: %s", session.id, exc)
        return restored

    async def shutdown(self, within_s: float = 10.0) -> None:
        """Stops every session's agent, concurrently, within a bound."""
        sessions = list(self.sessions.values())
        with anyio.move_on_after(within_s) as scope:
            async with anyio.create_task_group() as tg:
                for session in sessions:
                    tg.start_soon(self._stop_one, session)
        if scope.cancelled_caught:
            log.warning("shutdown: sessions still stopping after %.0fs", within_s)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    @staticmethod
    async def _stop_one(session: AgentSession) -> None:
        session.close()
        await session.stopped_for_good.wait()

    @property
    def _group(self) -> TaskGroup:
        if self._tg is None:
            raise RuntimeError("the supervisor is not running")
        return self._tg


def machine_policy(**caps: int) -> StartPolicy:
    """The default caps, with a reservation's limits bounded by this machine's size."""
    return StartPolicy(
        max_memory_mb=machine_memory_mb(), max_cpu_millis=(os.cpu_count() or 1) * 1000, **caps
    )
