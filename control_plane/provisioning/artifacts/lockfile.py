"""The VM's lock file: ``name==version --hash=sha256:...`` lines as pip-compile/uv write them.

Only what a hash-checked, index-free install accepts is allowed: exact pins, at least one
sha256 each, no URLs, editables or options other than ``--hash``. The ``# via`` comments
are kept, so a test can tell the direct dependencies from the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_VIA_ONE = re.compile(r"#\s+via\s+(\S.*)")
_VIA_MORE = re.compile(r"#\s{2,}(\S.*)")


class LockError(ValueError):
    """The lock file is not one a hash-checked install can use; says which line."""


def normalize(name: str) -> str:
    """PEP 503: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    hashes: tuple[str, ...]
    via: tuple[str, ...] = ()

    def requirement_line(self) -> str:
        return f"{self.name}=={self.version} " + " ".join(f"--hash={h}" for h in self.hashes)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with its first line number."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        out.append((start, " ".join(pending)))
        pending = []
    if pending:
        raise LockError(f"line {start}: ends in a continuation")
    return out


def _pin_of(number: int, line: str) -> Pin:
    words = line.split()
    found = _PIN.fullmatch(words[0])
    if found is None:
        raise LockError(f"line {number}: {words[0]!r} is not an exact name==version pin")
    hashes = []
    for word in words[1:]:
        matched = _HASH.fullmatch(word)
        if matched is None:
            raise LockError(f"line {number}: only --hash=sha256:<64 hex> may follow a pin")
        hashes.append(matched[1])
    if not hashes:
        raise LockError(f"line {number}: {words[0]} has no hash")
    return Pin(normalize(found[1]), found[2], tuple(hashes))


def parse_lock(text: str) -> list[Pin]:
    """Every pin, in file order; :class:`LockError` for anything a locked install refuses."""
    pins: list[Pin] = []
    via: list[str] = []

    def close() -> None:
        if pins and via:
            last = pins[-1]
            pins[-1] = Pin(last.name, last.version, last.hashes, (*last.via, *via))
        via.clear()

    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if line[0].isspace() and pins:
                if one := _VIA_ONE.fullmatch(stripped):
                    via.append(one[1])
                elif more := _VIA_MORE.fullmatch(stripped):
                    via.append(more[1])
            continue
        if line[0].isspace() or stripped.startswith("-"):
            raise LockError(f"line {number}: only pins and comments belong in a lock file")
        close()
        pin = _pin_of(number, stripped)
        if any(p.name == pin.name for p in pins):
            raise LockError(f"line {number}: {pin.name} is pinned twice")
        pins.append(pin)
    close()
    return pins
