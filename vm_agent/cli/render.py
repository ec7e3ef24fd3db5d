"""Human rendering of session events for a terminal (``prompt`` and ``attach``)."""

from __future__ import annotations

import sys
from typing import Any, TextIO


def _text_of(content: Any) -> str:
    if isinstance(content, dict) and content.get("type") == "text":
        return str(content.get("text", ""))
    return ""


class HumanRenderer:
    """Streams agent text inline; everything else on lines of its own."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out = out
        self.err = err
        self._mid_line = False

    def _line(self, text: str, *, to_err: bool = False) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        (self.err if to_err else self.out).write(text + "\n")

    def line(self, text: str, *, to_err: bool = False) -> None:
        """A line of its own (after any agent text still mid-line)."""
        self._line(text, to_err=to_err)
        (self.err if to_err else self.out).flush()

    def event(self, params: dict[str, Any]) -> None:
        kind, data = params.get("type"), params.get("data") or {}
        if kind == "acp.update":
            update = data.get("update") or {}
            variant = update.get("sessionUpdate")
            if variant == "agent_message_chunk":
                self.out.write(_text_of(update.get("content")))
                self._mid_line = True
            elif variant == "agent_thought_chunk":
                self._line(f"  (thinking) {_text_of(update.get('content'))}", to_err=True)
            elif variant in ("tool_call", "tool_call_update"):
                title = update.get("title") or update.get("toolCallId", "")
                self._line(f"  [tool] {title} {update.get('status', '')}".rstrip())
            elif variant == "plan":
                for entry in update.get("entries", []):
                    self._line(f"  [plan] {entry.get('status', '')}: {entry.get('content', '')}")
        elif kind == "session.state":
            note = f" ({data['note']})" if data.get("note") else ""
            self._line(f"-- {data.get('state')}{note}", to_err=True)
            if data.get("stderr_tail"):
                self._line("-- agent stderr (tail):\n" + str(data["stderr_tail"]), to_err=True)
        elif kind == "permission.requested":
            tool = (data.get("request") or {}).get("toolCall") or {}
            self._line(
                f"  [permission] asked for {tool.get('title') or tool.get('toolCallId', '?')}"
            )
        elif kind == "permission.resolved":
            outcome = data.get("outcome") or {}
            self._line(f"  [permission] {outcome.get('optionId') or outcome.get('outcome')}")
        elif kind == "agent.crash_report":
            self._line(f"!! {data.get('message')}", to_err=True)
            if data.get("stderr_tail"):
                self._line("!! agent stderr (tail):\n" + str(data["stderr_tail"]), to_err=True)
        self.out.flush()

    def outcome(self, outcome: dict[str, Any]) -> None:
        parts = [f"outcome: {outcome['outcome']}"]
        if outcome.get("stop_reason"):
            parts.append(f"stop reason: {outcome['stop_reason']}")
        if outcome.get("reason"):
            parts.append(str(outcome["reason"]))
        self._line("== " + "; ".join(parts))
