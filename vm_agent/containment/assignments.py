"""The owner-to-agent-user table, kept in the state directory across daemon restarts.

JSON, written whole to a temp file and renamed over (0600 in the 0700 state directory):
``{"version": 1, "owners": [{"owner": "alice", "user": 0}, {"owner": null, "user": 1}]}``.
A damaged file is set aside rather than trusted (``users.clean_table`` copes with the rest).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from vm_agent.containment.users import Owner

log = logging.getLogger(__name__)

FILE_NAME = "agent-users.json"


def load_table(path: Path) -> dict[Owner, int]:
    try:
        raw = json.loads(path.read_text())
        rows = raw["owners"]
        table: dict[Owner, int] = {}
        for row in rows:
            owner, index = row["owner"], row["user"]
            if (owner is None or isinstance(owner, str)) and isinstance(index, int):
                table.setdefault(owner, index)
        return table
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        aside = path.with_suffix(".damaged")
        log.error("%s is unreadable (%s); set aside as %s, starting afresh", path, exc, aside)
        os.replace(path, aside)
        return {}


def save_table(path: Path, table: Mapping[Owner, int]) -> None:
    rows = [{"owner": owner, "user": index} for owner, index in table.items()]
    data = json.dumps({"version": 1, "owners": rows}, indent=1).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
