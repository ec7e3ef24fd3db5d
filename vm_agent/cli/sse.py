"""Server-Sent Events, decoded (the WHATWG ``text/event-stream`` rules), without I/O.

Feed it lines as they arrive; it gives back whole events. Kept to what a task's stream
uses: ``id``, ``event``, ``data`` (joined by newlines), comments ignored, ``retry`` kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str
    id: str | None = None


@dataclass(slots=True)
class SseDecoder:
    """``feed(line)`` with each line (without its end); an empty line ends an event."""

    last_event_id: str | None = None
    retry_ms: int | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    _has_id: bool = False

    def feed(self, line: str) -> ServerEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id, self._has_id = value, True
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        if self._has_id:
            self.last_event_id = self._id
        event, data = self._event or "message", self._data
        self._event, self._data, self._has_id = "", [], False
        if not data:
            return None
        return ServerEvent(event=event, data="\n".join(data), id=self.last_event_id)
