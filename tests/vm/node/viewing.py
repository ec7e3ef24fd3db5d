"""What the node's tests do through a viewer: start and follow a session, run a prompt and
take its events, the hostile agent's attacks and their results."""

from __future__ import annotations

import json
from typing import Any

from tests.daemon.harness import Viewer
from tests.vm.booted import message_text, text_prompt

# under TCG an agent's start (a Python or Node process) takes seconds to a minute or more
START_S = 300.0
PROMPT_S = 300.0


async def start(viewer: Viewer, agent: str, cwd: str, session_id: str, **more: Any) -> Any:
    """session/start, then follow it from the events that come after the start."""
    params = {"agent": agent, "cwd": cwd, "session_id": session_id, **more}
    started = await viewer.call("session/start", params, timeout=START_S)
    assert started["state"] == "ready", started
    await follow(viewer, session_id, started["head_seq"])
    return started


async def follow(viewer: Viewer, session_id: str, after_seq: int) -> None:
    await viewer.call("session/subscribe", {"session_id": session_id, "after_seq": after_seq})


async def prompt(
    viewer: Viewer, session_id: str, prompt_id: str, text: str, timeout: float = PROMPT_S
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The prompt's outcome and the events up to its prompt.finished."""
    viewer.events.clear()
    params = {"session_id": session_id, "prompt_id": prompt_id, "prompt": text_prompt(text)}
    outcome = await viewer.call("session/prompt", params, timeout=timeout)

    def finished(event: dict[str, Any]) -> bool:
        data = event["data"] if isinstance(event["data"], dict) else {}
        return event["type"] == "prompt.finished" and data.get("prompt_id") == prompt_id

    await viewer.until(finished, timeout=60)
    return outcome, list(viewer.events)


async def attack(
    viewer: Viewer, session_id: str, prompt_id: str, attacks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The hostile agent's results, one per attack (`ok`: the attempt succeeded)."""
    outcome, events = await prompt(viewer, session_id, prompt_id, json.dumps(attacks))
    assert outcome["outcome"] == "completed", outcome
    results: list[dict[str, Any]] = json.loads(message_text(events))
    assert len(results) == len(attacks), results
    return results


def escapes(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attacks that got through."""
    return [r for r in results if r["ok"]]
