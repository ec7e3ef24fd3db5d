"""Session transcripts (so a new process can `session/load`) and `--once` markers.

With a state directory each session is a JSON-lines file `<sessionId>.jsonl`
written with unbuffered appends, so whatever was streamed before a crash or a
SIGKILL is on disk. Without one, transcripts live in memory for this process.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

USER = "user"
AGENT = "agent"
_SESSION_ID = re.compile(r"fake-[0-9a-f]{32}")

Record = tuple[str, str]


def valid_session_id(session_id: str) -> bool:
    """Only ids this agent hands out; also keeps ids from naming paths elsewhere."""
    return _SESSION_ID.fullmatch(session_id) is not None


def _encode(kind: str, text: str) -> bytes:
    return json.dumps({"kind": kind, "text": text}, ensure_ascii=False).encode() + b"\n"


class TranscriptStore:
    def __init__(self, state_dir: str | None) -> None:
        self._dir = Path(state_dir) if state_dir else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, list[Record]] = {}
        self._fds: dict[str, int] = {}

    def open(self, session_id: str) -> None:
        """Start (or continue, after a load) appending to a session's transcript."""
        if self._dir is None:
            self._memory.setdefault(session_id, [])
        elif session_id not in self._fds:
            path = self._dir / f"{session_id}.jsonl"
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fds[session_id] = os.open(path, flags, 0o600)

    def append(self, session_id: str, kind: str, text: str) -> None:
        self.append_many(session_id, kind, (text,))

    def append_many(self, session_id: str, kind: str, texts: Iterable[str]) -> None:
        fd = self._fds.get(session_id)
        if fd is not None:
            data = b"".join(_encode(kind, text) for text in texts)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        elif session_id in self._memory:
            self._memory[session_id].extend((kind, text) for text in texts)

    def load(self, session_id: str) -> list[Record] | None:
        """The session's records in order, or None when it is unknown."""
        if not valid_session_id(session_id):
            return None
        if self._dir is None:
            records = self._memory.get(session_id)
            return None if records is None else list(records)
        try:
            lines = (self._dir / f"{session_id}.jsonl").read_bytes().splitlines()
        except FileNotFoundError:
            return None
        return [record for line in lines if (record := _decode(line)) is not None]


def _decode(line: bytes) -> Record | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None  # a torn last line: skip it rather than refuse the load
    if not isinstance(data, dict):
        return None
    kind, text = data.get("kind"), data.get("text")
    if kind in (USER, AGENT) and isinstance(text, str):
        return kind, text
    return None


def first_time(state_dir: str, name: str) -> bool:
    """True the first time `name` is claimed in `state_dir`; later calls get False.

    O_EXCL makes the claim atomic, so two processes cannot both crash "once".
    """
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(Path(state_dir) / f".once-{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True
