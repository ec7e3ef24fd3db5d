"""An attempt's facts, as the exchange gathers them for the machine (issue 25): a tool's
start, agent text, the answer's tokens and the rise of the agent's cumulative cost over the
attempt (a new process counts its cost from zero). The agent's side is a stand-in for
``exchange_prompt``: the updates it relays, the usage it answers with."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vm_agent.core import events as ev
from vm_agent.session import traffic as t
from vm_agent.session.exchange import PromptExchange

pytestmark = pytest.mark.anyio


def chunk(text: str) -> dict[str, Any]:
    return {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}


def cost(amount: float) -> dict[str, Any]:
    return {
        "sessionUpdate": "usage_update",
        "size": 200000,
        "cost": {"amount": amount, "currency": "USD"},
    }


def usage(tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {
        "inputTokens": tokens_in,
        "outputTokens": tokens_out,
        "totalTokens": tokens_in + tokens_out,
    }


TOOL = {"sessionUpdate": "tool_call", "toolCallId": "t1", "title": "echo hi", "status": "pending"}
# claude-agent-acp 0.23.1, measured against the stand-in:
CUT = [chunk(""), chunk("Half of "), cost(0.000111)]  # the stream cut; 0 and 0 tokens
CONTEXT = [cost(0), chunk("## Context Usage")]  # /context: a local command, no request


class Agent:
    """An exchange, and what its agent does during each attempt."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fed: list[ev.Event] = []
        self.usages: list[Any] = []
        run: Any = SimpleNamespace(client=object())
        self.exchange = PromptExchange(
            self._feed, lambda: (run, "acp-1"), lambda: 5.0, self.usages.append, 1.0
        )
        self._updates: list[dict[str, Any]] = []
        self._answered: Any = None
        self._fact: ev.Event = ev.PromptAnswered(5.0, "end_turn")
        monkeypatch.setattr(t, "exchange_prompt", self._exchange_prompt)

    async def _feed(self, event: ev.Event) -> None:
        self.fed.append(event)

    async def _exchange_prompt(self, *_: Any, on_usage: Any) -> ev.Event:
        for update in self._updates:
            self.exchange.noted_update(update)
        if self._answered is not None:
            on_usage(self._answered)
        return self._fact

    async def attempt(
        self, updates: list[dict[str, Any]], answered: Any = None, fact: ev.Event | None = None
    ) -> ev.Event:
        """One send: these updates relayed, then this usage and this fact answered."""
        self._updates, self._answered = updates, answered
        self._fact = fact or ev.PromptAnswered(5.0, "end_turn")
        await self.exchange.send([{"type": "text", "text": "Say hello."}])
        return self.fed[-1]


def facts(event: ev.Event) -> tuple[Any, ...]:
    assert isinstance(event, ev.PromptAnswered)
    return (
        event.streamed_text,
        event.input_tokens,
        event.output_tokens,
        event.cost_rose,
        event.tool_started,
    )


async def test_a_cut_attempt_and_a_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent(monkeypatch)
    assert facts(await agent.attempt(CUT, usage(0, 0))) == (True, 0, 0, True, False)
    whole = [chunk("Hello."), cost(0.000222)]
    assert facts(await agent.attempt(whole, usage(12, 5))) == (True, 12, 5, True, False)
    assert agent.usages == [usage(0, 0), usage(12, 5)]  # the session's meter gets them too


async def test_what_is_no_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent(monkeypatch)
    # a local command: text, no token, the cost as it was
    assert facts(await agent.attempt(CONTEXT, usage(0, 0))) == (True, 0, 0, False, False)
    # an empty chunk is no text; an answer without usage has no tokens
    assert facts(await agent.attempt([chunk("")])) == (False, None, None, False, False)
    # the same cumulative cost again: nothing billed in this attempt
    await agent.attempt([cost(0.5)], usage(1, 1))
    assert facts(await agent.attempt([chunk("x"), cost(0.5)], usage(0, 0)))[3] is False


async def test_a_new_process_counts_its_cost_from_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent(monkeypatch)
    await agent.attempt(CUT, usage(0, 0))
    agent.exchange.restart()  # the retry's process: its first cost is all this attempt's
    assert facts(await agent.attempt(CUT, usage(0, 0)))[3] is True


async def test_a_tool_and_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Agent(monkeypatch)
    assert facts(await agent.attempt([chunk("Running it."), TOOL, *CUT], usage(0, 0)))[4] is True
    assert facts(await agent.attempt(CUT, usage(0, 0)))[4] is False  # each attempt anew
    error = ev.PromptErrored(5.0, -32603, "Internal error: API Error: 529")
    fed = await agent.attempt([TOOL], fact=error)
    assert isinstance(fed, ev.PromptErrored) and fed.tool_started and 0 <= fed.random < 1
