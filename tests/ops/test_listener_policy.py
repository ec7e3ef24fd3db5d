"""The pure decisions around the listener: plain or TLS, the log budget, the fd budget."""

from __future__ import annotations

import resource

import pytest

from vm_agent.edge.exposure import ListenerMode, is_loopback, listener_mode
from vm_agent.edge.ratelimit import LogBudget, left_out_note
from vm_agent.runtime.fdlimit import RESERVE, planned_soft_limit


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("0.0.0.1", False),
        ("::ffff:0.0.0.1", False),
        ("example.internal", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "tls", "allow", "mode"),
    [
        ("0.0.0.0", True, False, ListenerMode.TLS),
        ("127.0.0.1", True, True, ListenerMode.TLS),
        ("127.0.0.1", False, False, ListenerMode.PLAIN_LOOPBACK),
        ("127.0.0.1", False, True, ListenerMode.PLAIN_LOOPBACK),
        ("0.0.0.0", False, False, ListenerMode.REFUSED),
        ("0.0.0.0", False, True, ListenerMode.PLAIN_EXPOSED),
        ("", False, False, ListenerMode.REFUSED),
    ],
)
def test_listener_mode(host: str, tls: bool, allow: bool, mode: ListenerMode) -> None:
    assert listener_mode(host, tls=tls, allow_plaintext=allow) is mode


def test_log_budget_lets_a_few_through_and_counts_the_rest() -> None:
    budget = LogBudget(lines=2, window_s=10.0)
    got = [budget.take(t) for t in (0.0, 1.0, 2.0, 3.0, 9.9, 10.0, 10.5, 11.0, 25.0)]
    assert got == [0, 0, None, None, None, 3, 0, None, 1]
    assert left_out_note(3) == " (3 more like this not logged)"
    assert left_out_note(0) == ""


def test_log_budget_survives_a_clock_set_back() -> None:
    budget = LogBudget(lines=1, window_s=10.0)
    assert budget.take(100.0) == 0
    assert budget.take(101.0) is None
    assert budget.take(50.0) == 1  # a new window, not a stuck one


def test_log_budget_needs_sane_values() -> None:
    with pytest.raises(ValueError):
        LogBudget(lines=0, window_s=1)
    with pytest.raises(ValueError):
        LogBudget(lines=1, window_s=0)


INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "cap", "target", "warns"),
    [
        (65536, 65536, 1024, 65536, False),
        (1024, 524288, 1024, 1024 + RESERVE, False),
        (1024, INF, 1024, 1024 + RESERVE, False),
        (INF, INF, 1024, INF, False),
        (256, 1024, 1024, 1024, True),
        (1024, 1024, 1024, 1024, True),
    ],
)
def test_fd_budget(soft: int, hard: int, cap: int, target: int, warns: bool) -> None:
    got, warning = planned_soft_limit(soft, hard, cap)
    assert got == target
    assert (warning is not None) is warns
    if warning:
        assert "VM_AGENT_MAX_CONNECTIONS" in warning and "LimitNOFILE" in warning
