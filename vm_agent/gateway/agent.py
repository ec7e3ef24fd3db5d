"""The gateway's agent side: ACP on stdin/stdout, each call carried out on the daemon.

The client's requests run in their own tasks (``Connection``); the daemon's events are
handled in arrival order, and what they become for the client (``Feed``) is written before
the next event is read, so a prompt's answer always follows its last update.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from vm_agent.gateway import mapping as m
from vm_agent.gateway.feed import Action, Ask, Feed, Finished, Relay
from vm_agent.gateway.link import DaemonLink
from vm_agent.jsonrpc.connection import Connection, PeerClosed, Router, router
from vm_agent.jsonrpc.errors import INVALID_REQUEST, JsonRpcError

log = logging.getLogger(__name__)

# How long a crashed or recovered prompt's answer waits for the crash report the daemon
# records right after such an outcome (it is in the log already, unless the daemon died).
_CRASH_REPORT_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Options:
    version: str
    agent: str | None = None  # the catalog agent a session/new starts
    cwd: str | None = None  # where, on the VM (else the client's cwd)
    session: str | None = None  # the one session a session/new attaches to


@dataclass(eq=False)
class _Waiter:
    done: anyio.Event = field(default_factory=anyio.Event)
    finished: Finished | None = None


@dataclass(eq=False)
class _Open:
    feed: Feed
    replayed: anyio.Event = field(default_factory=anyio.Event)
    # Permission requests met before the client has the session (its session/new or
    # session/load not answered yet): asked right after that answer.
    deferred: list[Ask] | None = field(default_factory=list)


class Gateway:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.sessions: dict[str, _Open] = {}
        self._waiters: dict[str, _Waiter] = {}
        self.client: Connection | None = None
        self.link: DaemonLink | None = None
        self.tg: TaskGroup | None = None

    def router(self) -> Router:
        return router(
            {
                "initialize": self.initialize,
                "session/new": self.new_session,
                "session/load": self.load_session,
                "session/list": self.list_sessions,
                "session/prompt": self.prompt,
                "session/set_mode": self.set_mode,
                "session/set_config_option": self.set_config_option,
            },
            {"session/cancel": self.cancel},
        )

    def resume_points(self) -> dict[str, int]:
        return {sid: s.feed.last_seq for sid, s in self.sessions.items()}

    # -- the daemon's events ----------------------------------------------------------------

    def on_event(self, params: Any) -> Any:
        session_id = params.get("session_id") if isinstance(params, dict) else None
        opened = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if opened is None:
            return None
        actions = opened.feed.accept(params)
        if actions:
            return self._carry_out(opened, actions)
        self._note_replayed(opened)
        return None

    @staticmethod
    def _note_replayed(opened: _Open) -> None:
        # Only once the replayed updates are written: session/load answers after them.
        if opened.feed.replayed:
            opened.replayed.set()

    async def _carry_out(self, opened: _Open, actions: list[Action]) -> None:
        assert self.client is not None and self.tg is not None
        for action in actions:
            if isinstance(action, Relay):
                try:
                    await self.client.notify("session/update", action.params)
                except PeerClosed:
                    return
            elif isinstance(action, Ask):
                if opened.deferred is not None:
                    opened.deferred.append(action)
                else:
                    self.tg.start_soon(self._ask, opened.feed.session_id, action)
            else:
                waiter = self._waiters.get(action.prompt_id)
                if waiter is not None:
                    waiter.finished = action
                    waiter.done.set()
        self._note_replayed(opened)

    async def _ask(self, session_id: str, ask: Ask) -> None:
        assert self.client is not None and self.link is not None
        try:
            result = await self.client.request("session/request_permission", ask.params)
        except JsonRpcError as exc:
            log.warning("the client answered a permission request with an error: %s", exc)
            result = None
        except PeerClosed:
            return
        answer = m.permission_answer(session_id, ask.request_id, result)
        try:
            await self.link.call("permission/respond", answer)
        except JsonRpcError as exc:  # answered already (a cancel came first)
            log.info("permission %s: %s", ask.request_id, exc.message)

    # -- the client's calls -----------------------------------------------------------------

    async def initialize(self, raw: Any) -> dict[str, Any]:
        return m.initialize_result(raw, version=self.options.version, agent=self.options.agent)

    async def new_session(self, raw: Any) -> dict[str, Any]:
        args = m.parse_new(raw)
        if args.mcp_servers:
            log.warning("%d MCP servers of the client are not carried to the VM", args.mcp_servers)
        if self.options.session is not None:
            described = await self._describe(self.options.session)
            described = await self._ready(described)
            head = int(described.get("head_seq") or 0)
            await self._follow(self.options.session, after_seq=head, replay_until=head)
            settings = await self._offered(self.options.session)
            self._opened(self.options.session)
            return {"sessionId": self.options.session, **settings}
        if self.options.agent is None:
            raise JsonRpcError(
                INVALID_REQUEST,
                "this gateway was started without --agent or --session: it can only load "
                "and list sessions",
            )
        session_id = f"acp-{uuid.uuid4().hex[:16]}"
        params = m.start_params(
            agent=self.options.agent,
            cwd_flag=self.options.cwd,
            client_cwd=args.cwd,
            session_id=session_id,
        )
        described = await self._start(params)
        failure = m.start_failure(described)
        if failure is not None:
            raise failure
        head = int(described.get("head_seq") or 0)
        await self._follow(session_id, after_seq=0, replay_until=head)
        settings = await self._offered(session_id)
        self._opened(session_id)
        return {"sessionId": session_id, **settings}

    async def _start(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.link is not None
        while True:
            try:
                described: dict[str, Any] = await self.link.call_once("session/start", params)
                return described
            except PeerClosed:
                # Did the start arrive before the drop? Then the session exists already.
                listing = await self.link.call("session/list", {})
                try:
                    return await self._ready(m.find_session(listing, params["session_id"]))
                except JsonRpcError:
                    continue

    async def _describe(self, session_id: str) -> dict[str, Any]:
        assert self.link is not None
        return m.find_session(await self.link.call("session/list", {}), session_id)

    async def _ready(self, described: dict[str, Any]) -> dict[str, Any]:
        """The session once it has settled: loaded again in a new process when it was
        stopped (a daemon restart) or in error."""
        assert self.link is not None
        session_id = str(described.get("session_id"))
        if described.get("state") in ("stopped", "error"):
            params = {"session_id": session_id}
            recovered: dict[str, Any] = await self.link.call("session/recover", params)
            return recovered
        return described  # starting or recovering: a prompt waits for it on the daemon

    async def _follow(self, session_id: str, *, after_seq: int, replay_until: int) -> None:
        assert self.link is not None
        opened = self.sessions.get(session_id)
        if opened is None:
            feed = Feed(session_id, last_seq=after_seq, replay_until=replay_until)
            opened = self.sessions[session_id] = _Open(feed)
        if opened.feed.replayed:
            opened.replayed.set()
        await self.link.subscribe(session_id)
        await opened.replayed.wait()

    def _opened(self, session_id: str) -> None:
        """Called right before the answer that gives the client the session: the answer is
        written before the deferred requests, which start on a later turn of the loop."""
        opened = self.sessions[session_id]
        deferred, opened.deferred = opened.deferred or [], None
        assert self.tg is not None
        for ask in deferred:
            self.tg.start_soon(self._ask, session_id, ask)

    async def load_session(self, raw: Any) -> dict[str, Any]:
        args = m.parse_load(raw)
        if args.mcp_servers:
            log.warning("%d MCP servers of the client are not carried to the VM", args.mcp_servers)
        if args.session_id in self.sessions:
            raise JsonRpcError(INVALID_REQUEST, f"session {args.session_id!r} is open already")
        described = await self._ready(await self._describe(args.session_id))
        head = int(described.get("head_seq") or 0)
        # The history is the daemon's log from the first event: replayed before the answer.
        await self._follow(args.session_id, after_seq=0, replay_until=head)
        settings = await self._offered(args.session_id)
        self._opened(args.session_id)
        return settings

    async def list_sessions(self, raw: Any) -> dict[str, Any]:
        assert self.link is not None
        cwd = m.parse_list(raw)
        return m.list_result(await self.link.call("session/list", {}), cwd)

    async def prompt(self, raw: Any) -> dict[str, Any]:
        assert self.link is not None
        args = m.parse_prompt(raw)
        opened = self.sessions.get(args.session_id)
        if opened is None:
            raise m.unknown_session(args.session_id)
        prompt_id = f"acp-{uuid.uuid4().hex}"
        opened.feed.own_prompts.add(prompt_id)
        waiter = self._waiters[prompt_id] = _Waiter()
        params = {"session_id": args.session_id, "prompt": args.prompt, "prompt_id": prompt_id}
        try:
            # Sent again after a drop: the same prompt_id runs once and returns its outcome.
            outcome: dict[str, Any] = await self.link.call("session/prompt", params)
            with anyio.move_on_after(_CRASH_REPORT_WAIT_S):
                await waiter.done.wait()  # every update of the turn has been relayed
            if not waiter.done.is_set():
                await self._carry_out(opened, opened.feed.flush())
                await waiter.done.wait()
        finally:
            self._waiters.pop(prompt_id, None)
        assert waiter.finished is not None
        return m.prompt_answer(outcome, waiter.finished.crash_report)

    async def _offered(self, session_id: str) -> dict[str, Any]:
        """The modes and config options the remote agent offered for the session."""
        assert self.link is not None
        return m.offered(await self.link.call("session/settings", {"session_id": session_id}))

    async def set_mode(self, raw: Any) -> dict[str, Any]:
        session_id, params = m.parse_set_mode(raw)
        await self._change(session_id, "session/set_mode", params)
        return {}

    async def set_config_option(self, raw: Any) -> dict[str, Any]:
        session_id, params = m.parse_set_config_option(raw)
        answer = await self._change(session_id, "session/set_config_option", params)
        options = answer.get("configOptions") if isinstance(answer, dict) else None
        return {"configOptions": options if isinstance(options, list) else []}

    async def _change(self, session_id: str, method: str, params: dict[str, Any]) -> Any:
        """Relayed by the daemon to the agent; its refusal is the client's error as is.
        Repeating one after a drop is harmless: setting a mode twice sets it once."""
        assert self.link is not None
        if session_id not in self.sessions:
            raise m.unknown_session(session_id)
        return await self.link.call(method, params)

    def cancel(self, raw: Any) -> None:
        try:
            session_id = m.parse_cancel(raw)
        except JsonRpcError as exc:
            log.warning("ignoring session/cancel: %s", exc.message)
            return
        if session_id in self.sessions and self.tg is not None:
            self.tg.start_soon(self._cancel, session_id)

    async def _cancel(self, session_id: str) -> None:
        assert self.link is not None
        try:
            await self.link.call("session/cancel", {"session_id": session_id})
        except JsonRpcError as exc:
            log.warning("session/cancel of %s: %s", session_id, exc.message)
