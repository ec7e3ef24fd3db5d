from __future__ import annotations

from dataclasses import replace

import pytest

from vm_agent.core.classifier import DisconnectFacts, ExitFacts, classify
from vm_agent.core.vocabulary import DisconnectClass as D

OK = DisconnectFacts(
    exit=ExitFacts(exit_code=1, uptime_s=60.0, in_flight="session/prompt"),
    load_session_supported=True,
    acp_session_id_known=True,
)


def exit_(**kw: object) -> ExitFacts:
    return replace(OK.exit, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("facts", "kind", "words"),
    [
        (OK, D.RESUMABLE, "exited with code 1"),
        (replace(OK, exit=exit_(exit_code=None, signal=9)), D.RESUMABLE, "SIGKILL"),
        (
            replace(OK, exit=exit_(exit_code=None, signal=9, oom_killed=True)),
            D.RESUMABLE,
            "out of memory",
        ),
        (replace(OK, exit=exit_(exit_code=0)), D.RESUMABLE, "code 0"),
        (replace(OK, exit=exit_(exit_code=None)), D.RESUMABLE, "closed its output"),
        (replace(OK, exit=exit_(in_flight=None)), D.RESUMABLE, "can be loaded"),
        (replace(OK, stop_requested=True), D.CANCELLED, "stopped"),
        (replace(OK, deadline_passed=True), D.TIMEOUT, "deadline"),
        (replace(OK, cancel_pending=True), D.CANCELLED, "cancel"),
        # what we caused wins over what would otherwise be a crash
        (replace(OK, deadline_passed=True, load_session_supported=False), D.TIMEOUT, "deadline"),
        (replace(OK, cancel_pending=True, exit=exit_(uptime_s=0.1)), D.CANCELLED, "cancel"),
        (replace(OK, stop_requested=True, deadline_passed=True), D.CANCELLED, "stopped"),
        (replace(OK, exit=exit_(in_flight="initialize")), D.CRASHED, "during initialize"),
        (replace(OK, exit=exit_(in_flight="session/load")), D.CRASHED, "during session/load"),
        (replace(OK, exit=exit_(in_flight="session/new")), D.CRASHED, "during session/new"),
        # a first process that crashes soon after a quick prompt is still resumable
        (replace(OK, exit=exit_(uptime_s=0.5)), D.RESUMABLE, "loaded"),
        # a recovered process dying soon after: the recovery is not working
        (
            replace(OK, started_by_recovery=True, exit=exit_(uptime_s=0.5)),
            D.CRASHED,
            "within 3s of being recovered",
        ),
        (replace(OK, started_by_recovery=True, exit=exit_(uptime_s=2.99)), D.CRASHED, "within 3s"),
        (replace(OK, started_by_recovery=True, exit=exit_(uptime_s=3.0)), D.RESUMABLE, "loaded"),
        (
            replace(OK, started_by_recovery=True, min_uptime_s=10.0, exit=exit_(uptime_s=5.0)),
            D.CRASHED,
            "within 10s",
        ),
        (replace(OK, load_session_supported=False), D.CRASHED, "does not support session/load"),
        (replace(OK, acp_session_id_known=False), D.CRASHED, "before an ACP session"),
        (replace(OK, restarts_in_window=3), D.CRASHED, "budget is spent"),
        (replace(OK, restarts_in_window=2), D.RESUMABLE, "loaded"),
        (replace(OK, restarts_in_window=1, restart_budget=1), D.CRASHED, "budget"),
        (replace(OK, restart_budget=0), D.CRASHED, "budget"),
    ],
)
def test_classify(facts: DisconnectFacts, kind: D, words: str) -> None:
    verdict = classify(facts)
    assert verdict.kind is kind
    assert words in verdict.reason


def test_reason_never_depends_on_error_text() -> None:
    # There is no field for stderr or error messages at all: classification is by facts only.
    assert "stderr" not in DisconnectFacts.__dataclass_fields__
    assert "message" not in ExitFacts.__dataclass_fields__
