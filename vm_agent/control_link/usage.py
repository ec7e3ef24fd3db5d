"""Node usage for the heartbeat: CPU load, memory and disk (plain reads of /proc and statvfs).

A value that cannot be read is left out rather than failing the heartbeat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def node_usage(state_dir: str | os.PathLike[str] = "/") -> dict[str, Any]:
    """`{cpus, load_1m, load_5m, load_15m, mem_total_bytes, mem_available_bytes,
    disk_path, disk_total_bytes, disk_free_bytes}` (missing keys: not readable here)."""
    usage: dict[str, Any] = {"cpus": os.cpu_count() or 1}
    usage.update(_load())
    usage.update(_memory())
    usage.update(_disk(Path(state_dir)))
    return usage


def parse_loadavg(text: str) -> dict[str, float]:
    parts = text.split()
    return {"load_1m": float(parts[0]), "load_5m": float(parts[1]), "load_15m": float(parts[2])}


def parse_meminfo(text: str) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if name in ("MemTotal", "MemAvailable") and words and words[0].isdigit():
            unit = 1024 if len(words) > 1 and words[1] == "kB" else 1
            fields[name] = int(words[0]) * unit
    out: dict[str, int] = {}
    if "MemTotal" in fields:
        out["mem_total_bytes"] = fields["MemTotal"]
    if "MemAvailable" in fields:
        out["mem_available_bytes"] = fields["MemAvailable"]
    return out


def _load() -> dict[str, float]:
    try:
        return parse_loadavg(Path("/proc/loadavg").read_text())
    except (OSError, ValueError, IndexError):
        try:
            one, five, fifteen = os.getloadavg()
        except OSError:
            return {}
        return {"load_1m": one, "load_5m": five, "load_15m": fifteen}


def _memory() -> dict[str, int]:
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text())
    except OSError:
        return {}


def _disk(path: Path) -> dict[str, Any]:
    # The state dir may not exist yet (first start): measure its nearest existing parent.
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return {}
    return {
        "disk_path": str(path),
        "disk_total_bytes": st.f_blocks * st.f_frsize,
        "disk_free_bytes": st.f_bavail * st.f_frsize,
    }
