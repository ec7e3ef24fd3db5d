"""Issue 25 with the pinned real agents: a model provider that is overloaded or rate limits.

The stand-in answers the provider's own error (Anthropic's 529 ``overloaded_error``, the
Responses API's 503 ``server_is_overloaded``) for some requests, then answers. Each agent
retries a request itself first (claude: ``CLAUDE_CODE_MAX_RETRIES`` from the built-in
catalog, 4; codex: none here, its kit sets ``request_max_retries = stream_max_retries = 0``);
only when it gives up does the prompt fail, and the daemon sends it again (``prompt.retry``,
3 attempts by default) in a new process that resumes the session. What each agent answers
is in docs/agents.md, *Provider errors*.

The stand-in may also cut a streamed answer with the provider's mid-stream error event:
Claude Code sends that request again without streaming (the stand-in answers such a request
with the script's default reply), the adapter shows none of that answer, and the turn ends
``end_turn`` with no tokens counted: a cut answer, sent again the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.real_agents.agents import (
    CLAUDE,
    CODEX,
    GEMINI,
    Kit,
    require_real_agents,
    write_agents_file,
)
from tests.real_agents.harness import (
    WAIT_S,
    Rig,
    agent_text,
    daemon,
    event,
    rig,
    send_prompt,
    start_session,
)
from tests.real_agents.model_api import OVERLOADED, Failure, Reply
from vm_agent.process.catalog import builtin_agents

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]

# Requests Claude Code makes for one model call: the first and its own retries.
CLAUDE_TRIES = int(builtin_agents()["claude"].env["CLAUDE_CODE_MAX_RETRIES"]) + 1
ATTEMPTS = 3  # the daemon's default PROMPT_RETRY_ATTEMPTS
# A stream the provider cuts after its first piece of text, and what the daemon says of it.
CUT_STREAM = Reply(text="Half of an answer that", fail_mid=OVERLOADED)
CUT = "model answer cut off mid-stream (the agent ended the turn with no tokens counted)"


@pytest.fixture(autouse=True)
def _real_agents() -> None:
    require_real_agents()


def agents_file(r: Rig) -> Path:
    """The kit's entry, with the built-in catalog's fixed variables (as a VM has them)."""
    entry = r.entry()
    entry["env"].update(builtin_agents()[r.kit.name].env)
    return write_agents_file(r.root / "agents.toml", {r.kit.name: entry})


async def run_prompt(r: Rig, text: str = "Say hello.") -> tuple[dict[str, Any], list[Any]]:
    """One prompt through `vm-agent serve`: its outcome and the viewer's events."""
    async with daemon(r, agents_file(r)) as d, d.viewer() as v:
        await start_session(v, r)
        asked = await send_prompt(v, text, "p1")
        outcome = await v.answer(asked, timeout=WAIT_S)
        await event(v, "prompt.finished")
        return dict(outcome), list(v.events)


def of(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == kind]


@pytest.mark.parametrize(
    ("kit", "failing", "reason"),
    [
        (CLAUDE, [Reply(fail=OVERLOADED)] * CLAUDE_TRIES, "model provider overloaded (529)"),
        (CODEX, [Reply(fail=Failure(503))], "model provider overloaded"),
        # gemini-cli tries 3 times itself; it cannot load sessions: the same process again
        (GEMINI, [Reply(fail=Failure(503))] * 3, "model provider overloaded (503)"),
        # the stream cut: the turn ends as a whole one, only its cut piece shown
        (CLAUDE, [CUT_STREAM], CUT),
    ],
    ids=["claude", "codex", "gemini", "claude-cut"],
)
async def test_overloaded_then_an_answer_is_one_retry(
    tmp_path: Path, kit: Kit, failing: list[Reply], reason: str
) -> None:
    # Enough refusals to outlast the agent's own retries once, then the answer.
    replies = [*failing, Reply(text="Hello after the retry.")]
    async with rig(tmp_path, kit, replies) as r:
        outcome, events = await run_prompt(r)
    assert (outcome["outcome"], outcome["stop_reason"]) == ("completed", "end_turn"), outcome
    (retry,) = of(events, "prompt.retry")
    assert (retry["prompt_id"], retry["attempt"], retry["reason"]) == ("p1", 2, reason)
    assert ("error_code" in retry) is (reason != CUT)  # a cut answer was no error
    assert len(of(events, "prompt.started")) == len(of(events, "prompt.finished")) == 1
    assert len(r.script.turns()) == len(failing) + 1
    assert "Hello after the retry." in agent_text(events)  # the answer reached the viewer


@pytest.mark.parametrize(
    ("default", "reason", "tries"),
    [
        (
            Reply(fail=OVERLOADED),
            f"model provider overloaded (529) after {ATTEMPTS} attempts: Internal error: "
            "API Error: 529",
            CLAUDE_TRIES,
        ),
        (CUT_STREAM, f"{CUT} after {ATTEMPTS} attempts", 1),
    ],
    ids=["error", "cut"],
)
async def test_claude_overloaded_for_ever_fails_after_bounded_attempts(
    tmp_path: Path, default: Reply, reason: str, tries: int
) -> None:
    async with rig(tmp_path, CLAUDE) as r:
        r.script.default = default
        outcome, events = await run_prompt(r)
    assert outcome["outcome"] == "failed", outcome
    assert outcome["reason"].startswith(reason), outcome
    assert [x["attempt"] for x in of(events, "prompt.retry")] == list(range(2, ATTEMPTS + 1))
    assert len(r.script.turns()) == ATTEMPTS * tries  # the bound, as computed


async def test_claude_is_not_sent_again_after_a_tool(tmp_path: Path) -> None:
    async with rig(
        tmp_path, CLAUDE, [Reply(text="Running it.", tool=CLAUDE.shell("echo hi"))]
    ) as r:
        r.script.default = Reply(fail=OVERLOADED)
        outcome, events = await run_prompt(r)
    assert outcome["outcome"] == "failed", outcome
    assert "after the agent started a tool" in outcome["reason"]
    assert of(events, "prompt.retry") == []
    assert len(r.script.turns()) == 1 + CLAUDE_TRIES


async def test_claude_cut_answer_is_not_sent_again_after_a_tool(tmp_path: Path) -> None:
    """Both streams cut; Claude Code's request again without streaming gets the default
    reply: the first time a tool, which runs, the second time the end of the turn. None of
    those requests' tokens are counted, so the turn is a cut one, with a tool."""
    async with rig(tmp_path, CLAUDE, [CUT_STREAM, CUT_STREAM]) as r:
        r.script.default = Reply(text="Running it.", tool=CLAUDE.shell("echo hi"))

        async def then_the_end() -> None:
            await r.script.wait_for_turns(2)
            r.script.default = Reply(text="Done.")

        async with anyio.create_task_group() as tg:
            tg.start_soon(then_the_end)
            outcome, events = await run_prompt(r)
            tg.cancel_scope.cancel()
    assert outcome["outcome"] == "failed", outcome
    assert outcome["reason"] == f"{CUT} after the agent started a tool"
    assert of(events, "prompt.retry") == []
    assert len(r.script.turns()) == 2


async def test_claude_cut_after_a_counted_request_goes_unseen(tmp_path: Path) -> None:
    """The limit of the signal (docs/agents.md): a stream cut after a request whose tokens
    Claude Code counted (here the tool's) leaves the turn's tokens above zero, so the turn
    ends `completed` with the cut answer, as a whole turn would."""
    replies = [Reply(text="Running it.", tool=CLAUDE.shell("echo hi")), CUT_STREAM]
    async with rig(tmp_path, CLAUDE, replies) as r:
        outcome, events = await run_prompt(r)
    assert (outcome["outcome"], outcome["usage"]["input_tokens"]) == ("completed", 12), outcome
    assert agent_text(events).endswith("Half of ")
    assert of(events, "prompt.retry") == []


async def test_claude_s_local_command_is_no_cut_answer(tmp_path: Path) -> None:
    """/context: text and no token, as a cut answer, but no model request: nothing billed."""
    async with rig(tmp_path, CLAUDE) as r:
        outcome, events = await run_prompt(r, "/context")
    assert (outcome["outcome"], outcome["usage"]["output_tokens"]) == ("completed", 0), outcome
    assert "Context Usage" in agent_text(events)
    assert of(events, "prompt.retry") == []
    assert r.script.turns() == []


async def test_claude_after_a_failed_prompt_the_next_prompt_goes_to_a_new_process(
    tmp_path: Path,
) -> None:
    """claude-agent-acp 0.23.1 answers the next prompt in the process of a failed turn with
    that turn's stale end, at once and empty (the model never asked); the daemon sends it
    to a new process that resumes the session instead."""
    replies = [Reply(fail=Failure(400)), Reply(text="Back again.")]
    async with rig(tmp_path, CLAUDE, replies) as r:
        async with daemon(r, agents_file(r)) as d, d.viewer() as v:
            await start_session(v, r)
            first = await v.answer(await send_prompt(v, "Say hello.", "p1"), timeout=WAIT_S)
            await event(v, "prompt.finished", prompt_id="p1")
            failed_in = d.agent_pid()
            since = len(v.events)
            second = await v.answer(await send_prompt(v, "Once more.", "p2"), timeout=WAIT_S)
            await event(v, "prompt.finished", prompt_id="p2")
            events, answered_in = list(v.events)[since:], d.agent_pid()
        turns = r.script.turns()
    assert (first["outcome"], "API Error: 400" in first["reason"]) == ("failed", True), first
    assert (second["outcome"], second["stop_reason"]) == ("completed", "end_turn"), second
    assert "Back again." in agent_text(events)  # the model was asked, and its answer shown
    assert len(turns) == 2 and "Once more." in turns[-1].text
    assert answered_in != failed_in
    assert of(events, "prompt.retry") == []  # not a retry: the first prompt had ended
