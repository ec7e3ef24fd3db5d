"""Read-only connections for worker threads, reused between reads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import schema

_T = TypeVar("_T")


class ReaderPool:
    """Read-only connections handed to worker threads one at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = schema.connect(self._path, synchronous="NORMAL", readonly=True)
        try:
            return fn(conn)
        finally:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
