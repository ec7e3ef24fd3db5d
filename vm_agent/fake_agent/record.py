"""``--record FILE``: the fake agent appends what it was given, one JSON line each, for tests
to read: its environment at ``initialize``, the params of every session and settings
method (``mcpServers`` at session/new, load and resume; mode and option changes)."""

from __future__ import annotations

import json
import os
from typing import Any

RECORDED = (
    "session/new",
    "session/load",
    "session/resume",
    "session/set_mode",
    "session/set_config_option",
)


def record(path: str | None, method: str, params: Any) -> None:
    if path is None:
        return
    if method == "initialize":
        entry: dict[str, Any] = {"method": method, "env": dict(os.environ), "pid": os.getpid()}
    elif method in RECORDED:
        entry = {"method": method, "params": params, "pid": os.getpid()}
    else:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def read_record(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """What an agent recorded so far (tests)."""
    try:
        with open(path, encoding="utf-8") as src:
            return [json.loads(line) for line in src if line.strip()]
    except FileNotFoundError:
        return []
