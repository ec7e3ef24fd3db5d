"""One session's events from the daemon's durable log, turned into what the client is told.

Pure: ``Feed.accept`` takes a ``session/event`` (in seq order, replays included) and
returns actions for the shell. It keeps the last seq, so an event seen before a reconnect
is never relayed twice, and the shell resumes from ``last_seq``. Tested with tables in
tests/gateway/test_feed.py.

- ``acp.update``: relayed as ``session/update`` exactly as the agent sent it; only the
  envelope's ``sessionId`` becomes the client's id (the daemon's session id).
- ``prompt.started`` of a prompt this client did not send (history, another viewer): the
  prompt's blocks as ``user_message_chunk`` updates, as ACP's replay does.
- ``permission.requested``: asked of the client, once; while history is being replayed it
  is held until the replay's end and asked only if it is still unanswered then.
- ``prompt.finished``: the prompt's outcome. A ``crashed`` or ``recovered`` one is held
  for one event: the daemon records the crash report right after such an outcome, and the
  client's answer carries the report's summary (``flush`` lets it go without one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Relay:
    """Send ``session/update`` with these params."""

    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ask:
    """Send ``session/request_permission`` with these params; answer ``request_id``."""

    request_id: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    prompt_id: str
    outcome: dict[str, Any]
    crash_report: dict[str, Any] | None


Action = Relay | Ask | Finished


@dataclass
class Feed:
    session_id: str
    last_seq: int = 0
    # Events up to this seq are history: their permission requests may be answered already.
    replay_until: int = 0
    own_prompts: set[str] = field(default_factory=set)
    _held: dict[str, dict[str, Any]] = field(default_factory=dict)
    _settled: set[str] = field(default_factory=set)  # permission requests asked or resolved
    _finishing: Finished | None = None  # held until the crash report that follows it

    @property
    def replayed(self) -> bool:
        return self.last_seq >= self.replay_until

    def accept(self, event: Any) -> list[Action]:
        if not isinstance(event, dict) or event.get("session_id") != self.session_id:
            return []
        seq = event.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return []  # seen before a reconnect: the resumed replay overlaps it
        self.last_seq = seq
        data = event.get("data")
        kind = str(event.get("type"))
        actions: list[Action] = []
        if self._finishing is not None:
            held, self._finishing = self._finishing, None
            if kind == "agent.crash_report" and isinstance(data, dict):
                held = Finished(held.prompt_id, held.outcome, data)
            actions.append(held)
        actions += self._map(kind, data if isinstance(data, dict) else {}, seq)
        if self._held and seq >= self.replay_until:
            actions += [Ask(rid, params) for rid, params in self._held.items()]
            self._settled.update(self._held)
            self._held.clear()
        return actions

    def _map(self, kind: str, data: dict[str, Any], seq: int) -> list[Action]:
        if kind == "acp.update":
            if not isinstance(data.get("update"), dict):
                return []
            return [Relay({**data, "sessionId": self.session_id})]
        if kind == "prompt.started":
            if data.get("prompt_id") in self.own_prompts:
                return []
            blocks = data.get("prompt")
            return [
                Relay(
                    {
                        "sessionId": self.session_id,
                        "update": {"sessionUpdate": "user_message_chunk", "content": block},
                    }
                )
                for block in (blocks if isinstance(blocks, list) else [])
                if isinstance(block, dict)
            ]
        if kind == "prompt.finished":
            prompt_id = data.get("prompt_id")
            if not isinstance(prompt_id, str):
                return []
            finished = Finished(prompt_id, data, None)
            if data.get("outcome") in ("crashed", "recovered"):
                self._finishing = finished
                return []
            return [finished]
        if kind == "permission.requested":
            return self._requested(data, seq)
        if kind == "permission.resolved":
            rid = data.get("request_id")
            if isinstance(rid, str):
                self._held.pop(rid, None)
                self._settled.add(rid)
        return []

    def flush(self) -> list[Action]:
        """A held outcome, when no event followed it."""
        held, self._finishing = self._finishing, None
        return [] if held is None else [held]

    def _requested(self, data: dict[str, Any], seq: int) -> list[Action]:
        rid, request = data.get("request_id"), data.get("request")
        if not isinstance(rid, str) or not isinstance(request, dict) or rid in self._settled:
            return []
        params = {**request, "sessionId": self.session_id}
        if seq <= self.replay_until:
            self._held[rid] = params
            return []
        self._settled.add(rid)
        return [Ask(rid, params)]
