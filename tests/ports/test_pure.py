"""/proc/net/tcp* parsing and what a ports scan reports (pure)."""
# ruff: noqa: E501 - /proc/net/tcp lines as the kernel writes them

from __future__ import annotations

from vm_agent.ports.procnet import Listening, parse
from vm_agent.ports.watch import changes

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 4242 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1001        0 4243 1 0 20 4 30 10 -1
   3: garbage
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 99 1 0 100 0 0 10 0
"""


def test_only_listening_sockets_with_their_address_uid_and_inode() -> None:
    assert parse(TCP) == [
        Listening(8080, "127.0.0.1", 1001, 4242),
        Listening(22, "0.0.0.0", 0, 17),
    ]
    assert parse(TCP6) == [Listening(3000, "::1", 1001, 99)]
    assert parse("") == []


def test_a_change_is_reported_once() -> None:
    a = [{"port": 8080, "address": "127.0.0.1"}]
    assert changes({}, {"s1": []}) == []  # nothing before, nothing now
    assert changes({}, {"s1": a}) == [("s1", a)]
    assert changes({"s1": a}, {"s1": a}) == []
    assert changes({"s1": a}, {"s1": []}) == [("s1", [])]
    assert changes({"s1": a, "gone": a}, {"s1": a}) == []  # a session gone says nothing
