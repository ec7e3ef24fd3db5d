"""A session's traffic with its agent: updates, permission requests, prompts and cancels.

The relay keeps the agent's ``session/update`` stream in arrival order in the durable log
and holds a flooding agent back until the log has caught up; the permission flow gives
every ``session/request_permission`` an id, asks the session's policy, and logs the
request and its resolution; a prompt's exchange ends in the fact the machine is fed.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from vm_agent.acp.client import AgentProtocolError
from vm_agent.acp.permissions import PermissionPolicy
from vm_agent.core import events as ev
from vm_agent.eventlog import EventLog, EventLogClosed
from vm_agent.eventlog.log import Appended
from vm_agent.jsonrpc.connection import PeerClosed
from vm_agent.jsonrpc.errors import INTERNAL_ERROR, JsonRpcError

if TYPE_CHECKING:
    from vm_agent.session.agent_run import AgentRun

Clock = Callable[[], float]

_CANCELLED: dict[str, Any] = {"outcome": {"outcome": "cancelled"}}
# Updates relayed between two waits for the log's commit (bounds memory under a flood).
# Each wait is for the checkpoint before the last one, so one chunk commits while the
# next is read: at most two chunks are in memory and the reader never idles on a commit.
CONFIRM_EVERY = 512


class UpdateRelay:
    """``session/update`` params into the log, untouched, with backpressure.

    ``on_output`` is told of every update that is new output (not a replay), so the
    session can feed its machine's no-output deadline.
    """

    def __init__(
        self,
        log: EventLog,
        session_id: str,
        on_output: Callable[[], None],
        on_update: Callable[[Any], None] | None = None,
    ) -> None:
        self._log = log
        self._session_id = session_id
        self._on_output = on_output
        self._on_update = on_update  # sees each new update (usage_update's cost)
        # While a session/load replays history, updates are counted, not re-broadcast.
        self.replaying = False
        self.replayed_updates = 0
        self._unconfirmed = 0
        self._checkpoint: Appended | None = None

    def __call__(self, params: Any) -> Awaitable[None] | None:
        if self.replaying:
            # History replayed by session/load is not new output: it is not re-broadcast.
            self.replayed_updates += 1
            return None
        self._on_output()
        if self._on_update is not None:
            self._on_update(params.get("update") if isinstance(params, dict) else None)
        # Pipelined: the seq is fixed now (arrival order); viewers see it after its commit.
        appended = self._log.submit(self._session_id, "acp.update", params)
        self._unconfirmed += 1
        if self._unconfirmed >= CONFIRM_EVERY:
            # Backpressure: a flooding agent waits for the log (and the pipe fills) rather
            # than the daemon's memory growing without bound.
            self._unconfirmed = 0
            previous, self._checkpoint = self._checkpoint, appended
            if previous is not None:
                return _durable(previous)
        return None


async def _durable(appended: Appended) -> None:
    await appended.durable()


class PermissionFlow:
    """Every ``session/request_permission``: logged when asked and when resolved.

    ``cancelling`` says whether the session's prompt is being cancelled: a request that
    arrives then is answered ``cancelled`` without asking anyone.
    """

    def __init__(
        self,
        log: EventLog,
        session_id: str,
        policy: PermissionPolicy,
        cancelling: Callable[[], bool],
    ) -> None:
        self._log = log
        self._session_id = session_id
        self.policy = policy
        self._cancelling = cancelling
        self._ids = itertools.count(1)

    def __call__(self, params: Any) -> Awaitable[dict[str, Any]]:
        # The id is fixed on arrival (the connection calls us in order), not when we run.
        return self._flow(f"perm-{next(self._ids)}", params)

    async def _flow(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        await self._log.append(
            self._session_id,
            "permission.requested",
            {"request_id": request_id, "request": params},
        )
        if self._cancelling():
            result = _CANCELLED
        else:
            try:
                result = await self.policy.decide(request_id, params)
            except anyio.get_cancelled_exc_class():
                # The agent went away (its connection's tasks are cancelled) or the session
                # is being torn down: nobody will answer, but the log still closes the
                # request, so viewers and the outbox never keep a dangling one.
                await self._resolved(request_id, _CANCELLED, "the agent went away unanswered")
                raise
            except Exception as exc:
                await self._resolved(request_id, _CANCELLED, f"the request was refused: {exc}")
                raise
        await self._resolved(request_id, result)
        return result

    async def _resolved(
        self, request_id: str, result: dict[str, Any], reason: str | None = None
    ) -> None:
        data = {"request_id": request_id, **result}
        if reason is not None:
            data["reason"] = reason
        with anyio.CancelScope(shield=True), contextlib.suppress(EventLogClosed):
            await self._log.append(self._session_id, "permission.resolved", data)

    def cancel_all(self) -> None:
        """Answers every request still waiting on the policy with ``cancelled``."""
        cancel_all = getattr(self.policy, "cancel_all", None)
        if cancel_all is not None:
            cancel_all()


async def exchange_prompt(
    run: AgentRun,
    acp_id: str,
    prompt: list[dict[str, Any]],
    sent: anyio.Event,
    clock: Clock,
    *,
    on_usage: Callable[[Any], None] | None = None,
) -> ev.Event | None:
    """Sends ``session/prompt`` and waits for its answer: the fact for the machine.

    None when the agent went away: its run reports the disconnect, with the exit's facts.
    ``on_usage`` gets the answer's ``usage``, if it has one.
    """
    assert run.client is not None
    try:
        stop_reason = await run.request(
            "session/prompt", run.client.prompt(acp_id, prompt, sent=sent, on_usage=on_usage)
        )
    except JsonRpcError as exc:
        return ev.PromptErrored(clock(), exc.code, exc.message, exc.data)
    except AgentProtocolError as exc:
        return ev.PromptErrored(clock(), INTERNAL_ERROR, str(exc))
    except PeerClosed:
        return None
    return ev.PromptAnswered(clock(), stop_reason)


async def send_cancel(
    run: AgentRun, acp_id: str, prompt_sent: anyio.Event, within_s: float
) -> None:
    """Sends ``session/cancel`` once the prompt it concerns is written (a cancel written
    before its prompt would be lost on the agent)."""
    assert run.client is not None
    try:
        with anyio.move_on_after(within_s):
            await prompt_sent.wait()
            await run.client.cancel(acp_id)
    except PeerClosed:
        pass
