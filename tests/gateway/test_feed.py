"""The gateway's feed of one session's events, as tables."""

from __future__ import annotations

from typing import Any

from vm_agent.gateway.feed import Ask, Feed, Finished, Relay

SID = "s1"
UPDATE = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}
REQUEST = {"sessionId": "agent-acp-id", "toolCall": {"toolCallId": "t"}, "options": []}


def ev(seq: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "session_id": SID, "ts": 0.0, "type": kind, "data": data}


def test_updates_are_relayed_as_sent_once_each_with_the_clients_session_id() -> None:
    feed = Feed(SID)
    event = ev(1, "acp.update", sessionId="agent-acp-id", update=UPDATE, _meta={"k": 1})
    assert feed.accept(event) == [Relay({"sessionId": SID, "update": UPDATE, "_meta": {"k": 1}})]
    assert feed.accept(event) == []  # a resumed replay overlapping what was relayed
    assert feed.accept(ev(2, "session.state", state="ready")) == []
    assert feed.accept({**event, "session_id": "other"}) == []
    assert feed.accept(ev(3, "acp.update", update="not an object")) == []
    assert feed.last_seq == 3


def test_prompts_of_others_become_user_message_chunks_ours_do_not() -> None:
    feed = Feed(SID, own_prompts={"mine"})
    block = {"type": "text", "text": "q"}
    assert feed.accept(ev(1, "prompt.started", prompt_id="mine", prompt=[block])) == []
    assert feed.accept(ev(2, "prompt.started", prompt_id="theirs", prompt=[block])) == [
        Relay(
            {"sessionId": SID, "update": {"sessionUpdate": "user_message_chunk", "content": block}}
        )
    ]


def test_a_crash_outcome_waits_for_the_report_that_follows_it() -> None:
    feed = Feed(SID)
    finished = {"prompt_id": "p", "outcome": "recovered"}
    report = {"message": "went away", "recovered": True}
    assert feed.accept(ev(1, "prompt.finished", **finished)) == []
    assert feed.accept(ev(2, "agent.crash_report", **report)) == [Finished("p", finished, report)]
    # Without a report after it, the next event lets it go bare; so does flush.
    assert feed.accept(ev(3, "prompt.finished", prompt_id="q", outcome="crashed")) == []
    assert feed.accept(ev(4, "session.state", state="error")) == [
        Finished("q", {"prompt_id": "q", "outcome": "crashed"}, None)
    ]
    assert feed.accept(ev(5, "prompt.finished", prompt_id="r", outcome="crashed")) == []
    assert feed.flush() == [Finished("r", {"prompt_id": "r", "outcome": "crashed"}, None)]
    assert feed.flush() == []
    done = {"prompt_id": "t", "outcome": "completed", "stop_reason": "end_turn"}
    assert feed.accept(ev(6, "prompt.finished", **done)) == [Finished("t", done, None)]


def test_live_permission_requests_are_asked_once() -> None:
    feed = Feed(SID)
    asked = Ask("perm-1", {**REQUEST, "sessionId": SID})
    assert feed.accept(ev(1, "permission.requested", request_id="perm-1", request=REQUEST)) == [
        asked
    ]
    assert feed.accept(ev(2, "permission.requested", request_id="perm-1", request=REQUEST)) == []


def test_replayed_permission_requests_are_asked_at_the_end_only_if_unanswered() -> None:
    feed = Feed(SID, replay_until=4)
    assert feed.accept(ev(1, "permission.requested", request_id="old", request=REQUEST)) == []
    assert feed.accept(ev(2, "permission.resolved", request_id="old", outcome={})) == []
    assert feed.accept(ev(3, "permission.requested", request_id="open", request=REQUEST)) == []
    assert not feed.replayed
    assert feed.accept(ev(4, "acp.update", update=UPDATE)) == [
        Relay({"sessionId": SID, "update": UPDATE}),
        Ask("open", {**REQUEST, "sessionId": SID}),
    ]
    assert feed.replayed
    assert feed.accept(ev(5, "permission.requested", request_id="old", request=REQUEST)) == []
