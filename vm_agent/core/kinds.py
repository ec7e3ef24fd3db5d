"""The session machine's own bookkeeping: why it stops an agent, why it starts a new one."""

from __future__ import annotations

from enum import Enum


class Stopping(Enum):
    """Why we are stopping the agent ourselves, if we are."""

    NO = 0
    DEADLINE = 1
    CANCEL = 2
    SESSION = 3
    RETRY = 4  # a transient provider error: the prompt goes again to a new process


class RestartKind(Enum):
    CRASH = "crash"  # recovery of a resumable disconnect: counts against the budget
    RESET = "reset"  # a new process after we stopped one (cancel grace, deadline)
    MANUAL = "manual"  # someone asked a stopped or failed session to come back
    RETRY = "retry"  # a new process to send a prompt again in (issue 25): no crash
