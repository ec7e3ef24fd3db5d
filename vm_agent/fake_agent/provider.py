"""Scenarios whose model provider refuses: the prompt fails as a real agent's does after its
own retries (issue 25; what each agent answers is in docs/agents.md).

``provider-error``: the first ``--fail-times`` prompts this process runs end with
claude-agent-acp's answer to a 529 (``--fail-status 429``: to a rate limit), the later ones
echo. ``tool-then-provider-error``: the same, after the turn began a tool. With
``--state-dir`` the prompts are counted there, over every process of the session (a retry
in a new process is the next prompt, as for a real agent whose provider recovered).
"""

from __future__ import annotations

import itertools
import json

from vm_agent.fake_agent.transcript import first_time
from vm_agent.fake_agent.turn import Turn
from vm_agent.fake_agent.wire import RpcError

# Anthropic's bodies, as Claude Code quotes them in its "API Error: <status> <body>".
BODIES = {
    529: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    429: {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Number of request tokens exceeded"},
    },
}
TOOL_CALL_ID = "fake-provider-tool-1"
_prompts = itertools.count(1)  # prompts this process has run (the agent's own count)


def provider_failure(status: int, retry_after: float | None = None) -> RpcError:
    body = json.dumps(BODIES.get(status, BODIES[529]), separators=(",", ":"))
    # OpenAI's words for the wait it asks (Claude Code's message never carries one).
    wait = "" if retry_after is None else f" Please try again in {retry_after:g}s."
    return RpcError(-32603, f"Internal error: API Error: {status} {body}{wait}")


def _fails(turn: Turn) -> bool:
    """Whether this prompt is one of the first ``--fail-times``."""
    state_dir = turn.config.state_dir
    if state_dir is None:
        return next(_prompts) <= turn.config.fail_times
    # The first unclaimed number is this prompt's (claims are atomic: O_EXCL).
    count = next(n for n in itertools.count(1) if first_time(state_dir, f"provider-{n}"))
    return count <= turn.config.fail_times


async def provider_error(turn: Turn, text: str) -> str:
    if _fails(turn):
        raise provider_failure(turn.config.fail_status, turn.config.retry_after)
    return await turn.stream([text])


async def tool_then_provider_error(turn: Turn, text: str) -> str:
    if _fails(turn):
        turn.chunk("Running it.")
        call = {"toolCallId": TOOL_CALL_ID, "title": "echo hi", "kind": "execute"}
        turn.update({"sessionUpdate": "tool_call", **call, "status": "in_progress"})
        turn.update({"sessionUpdate": "tool_call_update", **call, "status": "completed"})
        raise provider_failure(turn.config.fail_status, turn.config.retry_after)
    return await turn.stream([text])
