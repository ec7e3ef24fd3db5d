"""The viewer API's methods (docs/viewer-api.md) for one authenticated viewer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from vm_agent.acp.permissions import AskPolicy
from vm_agent.eventlog import EventsDropped
from vm_agent.jsonrpc.connection import Router
from vm_agent.jsonrpc.errors import INVALID_REQUEST, JsonRpcError
from vm_agent.process.catalog import CatalogError
from vm_agent.server import (
    access,
    errors,
    port_forward,
    push_method,
    terminal_methods,
    workspace_methods,
)
from vm_agent.server import params as p
from vm_agent.server.access import Grant
from vm_agent.server.fanout import FanOut, Subscription
from vm_agent.server.prompts import PromptRuns
from vm_agent.server.protocols import Identity
from vm_agent.server.settings_methods import handlers as settings_handlers
from vm_agent.server.transport import WebSocketTransport
from vm_agent.session.session import AgentSession, SessionRefused
from vm_agent.session.start_policy import CapReached, NotYours
from vm_agent.session.supervisor import Supervisor, UnknownSession

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


@dataclass(eq=False)
class ViewerContext:
    """What one viewer's methods work with; the task groups outlive the requests."""

    name: str
    identity: Identity
    grant: Grant
    transport: WebSocketTransport
    supervisor: Supervisor
    fanout: FanOut
    prompts: PromptRuns
    server_tg: TaskGroup  # owns prompts: they outlive the viewer that asked
    viewer_tg: TaskGroup  # owns this viewer's subscriptions


class ViewerMethods:
    def __init__(self, ctx: ViewerContext) -> None:
        self.ctx = ctx
        self.subscriptions: list[Subscription] = []

    def router(self) -> Router:
        table: dict[str, Handler] = {
            "session/start": self.start,
            "session/prompt": self.prompt,
            "session/cancel": self.cancel,
            "session/stop": self.stop,
            "session/recover": self.recover,
            "session/list": self.list,
            "session/subscribe": self.subscribe,
            "permission/respond": self.permission_respond,
            # Added by their own modules (the names are in ``access``' scope tables).
            **workspace_methods.handlers(self._session),
            **terminal_methods.handlers(self._session, self.ctx),
            **port_forward.PortForwards(self.ctx, self._session).handlers(),
            **settings_handlers(self._session, lambda: self.ctx.identity.subject),
            **push_method.handlers(self._session, self.ctx.supervisor),
        }
        requests = {name: self._guard(name, fn) for name, fn in table.items()}
        requests["auth"] = self._second_auth
        return Router(requests=requests)

    def _guard(self, method: str, fn: Handler) -> Callable[[Any], Awaitable[Any]]:
        # Called inline by the connection: a refusal here answers without starting a task.
        def check(params: Any) -> Awaitable[Any]:
            try:
                access.check_method(method, self.ctx.grant)
            except access.Denied as exc:
                raise errors.forbidden(str(exc)) from None
            return fn(params)

        return check

    @staticmethod
    def _second_auth(params: Any) -> Awaitable[Any]:
        raise JsonRpcError(INVALID_REQUEST, "already authenticated on this connection")

    def _session(self, session_id: str) -> AgentSession:
        """The session, if this viewer's token reaches it (-32002 / -32003 otherwise)."""
        try:
            session = self.ctx.supervisor.get(session_id)
        except UnknownSession:
            raise errors.unknown_session(session_id) from None
        try:
            access.check_reach(self.ctx.grant, session.owner, session_id)
        except access.Denied as exc:
            raise errors.forbidden(str(exc)) from None
        return session

    # -- write ------------------------------------------------------------------------------

    async def start(self, raw: Any) -> dict[str, Any]:
        args = p.parse(p.StartParams, "session/start", raw)
        try:
            owner = access.owner_at_start(self.ctx.grant, args.owner)
            access.check_repository_at_start(self.ctx.grant, args.repository)
        except access.Denied as exc:
            raise errors.forbidden(str(exc)) from None
        log.info(
            "%s (%s) starts a %s session for %s (reservation %s)",
            self.ctx.name,
            self.ctx.identity.subject,
            args.agent,
            owner or "the node",
            args.reservation,
        )
        try:
            # Shielded: a viewer leaving must not cut the supervisor's start in half.
            with anyio.CancelScope(shield=True):
                session = await self.ctx.supervisor.start_session(
                    args.agent,
                    args.cwd,
                    session_id=args.session_id,
                    load_acp_session=args.acp_session_id,
                    reservation=args.reservation,
                    owner=owner,
                    node_scope=self.ctx.grant.node,
                    repository=args.repository,
                    settings=args.agent_settings,
                )
        except NotYours as exc:
            raise errors.forbidden(str(exc)) from None
        except (CapReached, SessionRefused) as exc:
            raise errors.refused(str(exc)) from None
        except CatalogError as exc:
            raise JsonRpcError.invalid_params(f"session/start: {exc}") from None
        except ValueError as exc:
            raise JsonRpcError.invalid_params(f"session/start: {exc}") from None
        await session.wait_settled()
        if (refusal := session.start_refusal) is not None:
            # The agent cannot take a start setting: no session (its process is stopped).
            with anyio.CancelScope(shield=True):
                await self.ctx.supervisor.drop_refused(session)
            raise JsonRpcError.invalid_params(f"session/start: {refusal}")
        return session.describe()

    async def prompt(self, raw: Any) -> dict[str, Any]:
        args = p.parse(p.PromptParams, "session/prompt", raw)
        session = self._session(args.session_id)
        if self.ctx.supervisor.drained and args.prompt_id not in session.outcomes:
            raise errors.refused("this node is drained and about to be deleted: no new prompts")
        try:
            outcome = await self.ctx.prompts.run(
                self.ctx.server_tg, session, args.prompt_id, args.prompt
            )
        except SessionRefused as exc:
            raise errors.refused(str(exc)) from None
        return outcome.to_json()

    async def cancel(self, raw: Any) -> dict[str, Any]:
        session = self._session(p.parse(p.SessionParams, "session/cancel", raw).session_id)
        with anyio.CancelScope(shield=True):
            await session.cancel()
        return {}

    async def stop(self, raw: Any) -> dict[str, Any]:
        session = self._session(p.parse(p.SessionParams, "session/stop", raw).session_id)
        with anyio.CancelScope(shield=True):
            # Answers once the session's processes are gone (its cgroup empty).
            await session.stop_and_wait()
        return {}

    async def recover(self, raw: Any) -> dict[str, Any]:
        session = self._session(p.parse(p.SessionParams, "session/recover", raw).session_id)
        try:
            with anyio.CancelScope(shield=True):
                await self.ctx.supervisor.recover_session(session, node_scope=self.ctx.grant.node)
        except (SessionRefused, CapReached) as exc:
            raise errors.refused(str(exc)) from None
        await session.wait_settled()
        return session.describe()

    async def permission_respond(self, raw: Any) -> dict[str, Any]:
        args = p.parse(p.PermissionParams, "permission/respond", raw)
        session = self._session(args.session_id)
        policy = session.permissions
        if not isinstance(policy, AskPolicy):
            raise errors.refused("this session answers its permission requests by policy")
        policy.respond(args.request_id, args.option_id, cancelled=args.cancelled)
        return {}

    # -- read -------------------------------------------------------------------------------

    async def list(self, raw: Any) -> dict[str, Any]:
        p.parse(p.ListParams, "session/list", raw)
        grant = self.ctx.grant
        sessions = self.ctx.supervisor.sessions.values()
        return {"sessions": [s.describe() for s in sessions if access.may_reach(grant, s.owner)]}

    async def subscribe(self, raw: Any) -> dict[str, Any]:
        args = p.parse(p.SubscribeParams, "session/subscribe", raw)
        self._session(args.session_id)
        if any(s.session_id == args.session_id for s in self.subscriptions):
            raise JsonRpcError(
                INVALID_REQUEST, f"already subscribed to session {args.session_id!r}"
            )
        fanout = self.ctx.fanout
        head = fanout.log.head_seq(args.session_id)
        if args.after_seq > head:
            raise JsonRpcError.invalid_params(
                f"session/subscribe: after_seq {args.after_seq} is past the head seq {head}"
            )
        try:
            sub, first = await fanout.subscribe(args.session_id, args.after_seq, self.ctx.transport)
        except EventsDropped as exc:
            raise JsonRpcError(
                errors.EVENTS_DROPPED,
                f"events {exc.after_seq + 1}..{exc.first_available_seq - 1} were dropped; "
                f"the first available seq is {exc.first_available_seq}",
                {"first_available_seq": exc.first_available_seq},
            ) from None
        self.subscriptions.append(sub)
        # The pump starts on a later turn of the loop: the answer below is queued first.
        self.ctx.viewer_tg.start_soon(fanout.pump, sub, first)
        return {"head_seq": fanout.log.head_seq(args.session_id)}

    def close(self) -> None:
        for sub in self.subscriptions:
            self.ctx.fanout.unsubscribe(sub)
        self.subscriptions.clear()
