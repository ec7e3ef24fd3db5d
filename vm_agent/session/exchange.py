"""A prompt's sends to the agent and its cancel: the shell's side of one turn at a time.

It watches each attempt's updates for what the machine decides a retry with (issue 25;
docs/outcomes.md): a tool's start (a prompt whose attempt failed after the agent began a
tool is never sent again), agent text, and the attempt's usage (tokens and the rise of the
agent's cost: a turn an agent ended whole though its answer was cut shows in them). The
fact the machine is fed carries them, with the draw for a retry's jitter.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from vm_agent.core import events as ev
from vm_agent.core import usage as u
from vm_agent.jsonrpc.errors import INTERNAL_ERROR
from vm_agent.session import traffic as t

if TYPE_CHECKING:
    from vm_agent.session.agent_run import AgentRun

# Updates that say the agent began (or carries on with) a tool: after one, a turn has had
# effects that sending the prompt again would repeat.
TOOL_UPDATES = frozenset({"tool_call", "tool_call_update"})

Feed = Callable[[ev.Event], Awaitable[Any]]
Current = Callable[[], "tuple[AgentRun | None, str | None]"]  # the run and its ACP session


class PromptExchange:
    def __init__(
        self,
        feed: Feed,
        current: Current,
        clock: t.Clock,
        on_usage: Callable[[Any], None],
        cancel_grace_s: float,
    ) -> None:
        self._feed = feed
        self._current = current
        self._clock = clock
        self._on_usage = on_usage
        self._cancel_grace_s = cancel_grace_s
        self._sent = anyio.Event()
        # During the attempt being sent now:
        self.tool_started = False
        self.streamed_text = False
        self._spent = u.PromptMeter()  # its tokens and cost, as the agent reports them

    def restart(self) -> None:
        """A new agent process: its cumulative cost counts from zero."""
        self._spent.restart()

    def noted_update(self, update: Any) -> None:
        """Sees each new ``session/update`` (not a replay)."""
        if not isinstance(update, dict):
            return
        kind = update.get("sessionUpdate")
        if kind in TOOL_UPDATES:
            self.tool_started = True
        elif kind == "agent_message_chunk" and _text(update.get("content")):
            self.streamed_text = True
        self._spent.noted_update(update)

    async def send(self, prompt: list[dict[str, Any]]) -> None:
        """One attempt: ``session/prompt`` to the agent, its answer fed to the machine."""
        run, acp_id = self._current()
        if run is None or run.client is None or acp_id is None:
            await self._feed(ev.PromptErrored(self._clock(), INTERNAL_ERROR, "no agent process"))
            return
        self.tool_started = self.streamed_text = False
        self._spent.prompt_started()
        self._sent = sent = anyio.Event()
        fact = await t.exchange_prompt(
            run, acp_id, prompt, sent, self._clock, on_usage=self._answered
        )
        spent = self._spent.prompt_ended()
        draw = random.random()  # noqa: S311 - a backoff's jitter, not a secret
        if isinstance(fact, ev.PromptErrored):
            fact = dataclasses.replace(fact, tool_started=self.tool_started, random=draw)
        elif isinstance(fact, ev.PromptAnswered):
            fact = dataclasses.replace(
                fact,
                streamed_text=self.streamed_text,
                input_tokens=spent.tokens.get("input_tokens"),
                output_tokens=spent.tokens.get("output_tokens"),
                cost_rose=bool(spent.cost),
                tool_started=self.tool_started,
                random=draw,
            )
        if fact is not None:
            await self._feed(fact)

    def _answered(self, raw: Any) -> None:
        self._spent.answered(u.from_prompt_answer(raw))
        self._on_usage(raw)

    async def cancel(self) -> None:
        run, acp_id = self._current()
        if run is not None and run.client is not None and acp_id is not None:
            await t.send_cancel(run, acp_id, self._sent, self._cancel_grace_s)


def _text(content: Any) -> bool:
    """Whether an ``agent_message_chunk``'s content is some text."""
    text = content.get("text") if isinstance(content, dict) else None
    return isinstance(text, str) and text != ""
