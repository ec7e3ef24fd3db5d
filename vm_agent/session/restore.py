"""What a daemon restart reads back from the log for a restored session: the outcome of
each prompt it finished (so a retried prompt id never runs twice) and the one outcome of a
prompt the earlier daemon died in."""

from __future__ import annotations

from vm_agent.eventlog import EventLog, EventsDropped
from vm_agent.session.outcome import Outcome
from vm_agent.session.session import AgentSession


async def load_outcomes(log: EventLog, session: AgentSession) -> None:
    """Outcomes by prompt id, so a prompt retried after a daemon restart never runs twice."""
    after = 0
    while True:
        try:
            page = await log.read(session.id, after, 5000)
        except EventsDropped as exc:
            after = exc.first_available_seq - 1
            continue
        if not page:
            return
        for event in page:
            if event.type == "prompt.finished":
                outcome = Outcome.model_validate(event.data)
                session.outcomes[outcome.prompt_id] = outcome
        after = page[-1].seq


async def close_orphan_prompt(log: EventLog, session_id: str, state: str) -> None:
    if state not in ("prompting", "cancelling", "recovering"):
        return
    head = log.head_seq(session_id)
    try:
        tail = await log.read(session_id, max(0, head - 500), 500)
    except EventsDropped:
        return
    started = [e.data["prompt_id"] for e in tail if e.type == "prompt.started"]
    finished = {e.data["prompt_id"] for e in tail if e.type == "prompt.finished"}
    for prompt_id in started:
        if prompt_id not in finished:
            await log.append(
                session_id,
                "prompt.finished",
                {
                    "session_id": session_id,
                    "prompt_id": prompt_id,
                    "outcome": "crashed",
                    "reason": "the daemon stopped while this prompt was running",
                },
            )
