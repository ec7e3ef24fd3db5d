"""Listening TCP sockets from ``/proc/net/tcp`` and ``/proc/net/tcp6``. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LISTEN = "0A"


@dataclass(frozen=True, slots=True, order=True)
class Listening:
    port: int
    address: str
    uid: int
    inode: int


def _address(hex_addr: str) -> str:
    """The kernel prints each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def parse(text: str) -> list[Listening]:
    """The listening sockets of one ``/proc/net/tcp*`` file; lines it cannot read are skipped."""
    out: list[Listening] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        try:
            hex_addr, hex_port = fields[1].split(":")
            out.append(
                Listening(int(hex_port, 16), _address(hex_addr), int(fields[7]), int(fields[9]))
            )
        except ValueError:
            continue
    return out
