"""What a scenario can do during one prompt turn: stream, pause, crash."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio

from vm_agent.fake_agent.config import Config
from vm_agent.fake_agent.transcript import AGENT, TranscriptStore, first_time
from vm_agent.fake_agent.wire import LinePeer

END_TURN = "end_turn"
# The `_meta` key of an update's send time (wall clock, seconds) under `--timestamps`.
SENT_AT = "vm_agent/sent_at"
CANCELLED = "cancelled"


def split_text(text: str, pieces: int) -> list[str]:
    """Exactly `pieces` consecutive slices of `text` (the first ones one longer)."""
    if pieces <= 0:
        return []
    base, extra = divmod(len(text), pieces)
    out: list[str] = []
    start = 0
    for index in range(pieces):
        end = start + base + (1 if index < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def prompt_text(blocks: list[Any]) -> str:
    """The prompt's text blocks joined without a separator."""
    return "".join(
        str(block.get("text", ""))
        for block in blocks
        if isinstance(block, dict) and block.get("type") == "text"
    )


def text_chunk(kind: str, text: str) -> dict[str, Any]:
    return {"sessionUpdate": kind, "content": {"type": "text", "text": text}}


@dataclass
class Session:
    session_id: str
    cwd: str
    cancel: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class Turn:
    peer: LinePeer
    store: TranscriptStore
    session: Session
    config: Config

    @property
    def cancelled(self) -> bool:
        return self.session.cancel.is_set()

    def update(self, update: dict[str, Any]) -> None:
        if self.config.timestamps:
            # Read last, right before the line is encoded and written (benchmarks' latency).
            update = {**update, "_meta": {SENT_AT: time.time()}}
        self.peer.notify("session/update", {"sessionId": self.session.session_id, "update": update})

    def chunk(self, text: str) -> None:
        self.update(text_chunk("agent_message_chunk", text))
        self.store.append(self.session.session_id, AGENT, text)

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` or until a cancel arrives; True when cancelled."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self.session.cancel.wait()
        else:
            await anyio.lowlevel.checkpoint()  # let the reader see a cancel
        return self.cancelled

    async def stream(self, pieces: list[str], *, honour_cancel: bool = True) -> str:
        """Send `pieces` as message chunks, `--delay-ms` apart."""
        delay = self.config.delay_ms / 1000
        for index, piece in enumerate(pieces):
            cancelled = await self.pause(delay if index else 0)
            if cancelled and honour_cancel:
                return CANCELLED
            self.chunk(piece)
        return END_TURN

    def may_crash(self, marker: str) -> bool:
        """False when `--once` is given and this crash already happened once."""
        return not self.config.once or first_time(self.config.state_dir or ".", marker)

    def crash(self, *, sigkill: bool = False) -> NoReturn:
        """Die now: stdout and stderr are unbuffered, so everything sent is out."""
        if sigkill:
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(self.config.exit_code)
