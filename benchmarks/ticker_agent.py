"""A minimal ACP agent that streams one chunk every few milliseconds: the scale figure's load.

The fake agent (anyio, the full scenario machinery) costs ~2.7 % of a core per agent
streaming 100 chunks/s on the 2-core benchmark machine, so 64 of them take most of the
machine and leave the daemon's figure unreadable. This one is plain blocking I/O and
imports only the standard library, so 64 of them fit next to the daemon.

It speaks just enough ACP: `initialize`, `session/new`, `session/prompt` (streams
`--chunks` `agent_message_chunk` updates `--delay-ms` apart, each stamped with its send
time in `_meta` like the fake agent's `--timestamps`, then answers `end_turn`), and
`session/cancel` (ends the turn with `cancelled`). Other requests get -32601. It exits at
the end of its stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

SENT_AT = "vm_agent/sent_at"  # the fake agent's key (vm_agent.fake_agent.turn.SENT_AT)


class Ticker:
    def __init__(self, chunks: int, delay_s: float) -> None:
        self.chunks = chunks
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._sessions = 0

    def write(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def handle(self, msg: dict[str, Any]) -> None:
        method, rid = msg.get("method"), msg.get("id")
        params = msg.get("params") or {}
        if method == "initialize":
            self.answer(rid, {"protocolVersion": 1, "agentCapabilities": {}, "authMethods": []})
        elif method == "session/new":
            self._sessions += 1
            self.answer(rid, {"sessionId": f"ticker-{self._sessions}"})
        elif method == "session/prompt":
            self._cancel.clear()
            sid = params.get("sessionId")
            threading.Thread(target=self._turn, args=(rid, sid), daemon=True).start()
        elif method == "session/cancel":
            self._cancel.set()
        elif rid is not None and method is not None:
            error = {"code": -32601, "message": f"method not found: {method}"}
            self.write({"jsonrpc": "2.0", "id": rid, "error": error})

    def answer(self, rid: Any, result: dict[str, Any]) -> None:
        self.write({"jsonrpc": "2.0", "id": rid, "result": result})

    def _turn(self, rid: Any, session_id: Any) -> None:
        next_at = time.monotonic()
        for _ in range(self.chunks):
            next_at += self.delay_s
            if self._cancel.wait(max(0.0, next_at - time.monotonic())):
                self.answer(rid, {"stopReason": "cancelled"})
                return
            update = {
                "sessionUpdate": "agent_message_chunk",
                "content": {"type": "text", "text": "x"},
                "_meta": {SENT_AT: time.time()},
            }
            params = {"sessionId": session_id, "update": update}
            self.write({"jsonrpc": "2.0", "method": "session/update", "params": params})
        self.answer(rid, {"stopReason": "end_turn"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    ticker = Ticker(args.chunks, args.delay_ms / 1000)
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            ticker.handle(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
