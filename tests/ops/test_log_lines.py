"""One log event is one line, whatever its fields hold: a session id or a cwd chosen by a
viewer (newlines, carriage returns, terminal escapes, Unicode line separators) cannot forge
a log line in the console format, nor break the JSON format; a traceback's lines are
marked as its own."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from vm_agent.common.redact import Redactor
from vm_agent.runtime.logs import TRACEBACK_MARK, LogFormat, setup_logging

FORGED = "12:00:00 INFO    vm_agent.server: viewer admin authenticated"
HOSTILE = [
    f"/work\n{FORGED}",
    f"/work\r{FORGED}",
    f"/work\r\n{FORGED}",
    f"/work\u2028{FORGED}",
    f"/work\u2029{FORGED}",
    f"/work\x85{FORGED}",
    f"/work\x0b{FORGED}",
    f"/work\x1b[2K\x1b[1G{FORGED}",  # a terminal's erase-line and carriage return
    "/work\x00\x7f\x9b",
]


@pytest.fixture
def log_to() -> Iterator[io.StringIO]:
    """setup_logging's handler, writing into a buffer; the root logger restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _emit(fmt: LogFormat, stream: io.StringIO, cwd: str) -> str:
    setup_logging(fmt, Redactor())
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    log = logging.getLogger("vm_agent.session.supervisor")
    log.warning("session %s: not restored: %s", cwd, OSError(f"no such directory: {cwd}"))
    return stream.getvalue()


@pytest.mark.parametrize("cwd", HOSTILE)
def test_console_format_keeps_one_event_on_one_line(log_to: io.StringIO, cwd: str) -> None:
    out = _emit("console", log_to, cwd)
    assert out.endswith("\n")
    (line,) = out[:-1].splitlines()  # splitlines breaks on \r, \v, \x85, \u2028 too
    assert FORGED not in line or line.index(FORGED) > 0
    assert "\x1b" not in line and "\x00" not in line
    assert "/work\\" in line  # escaped where it was, e.g. /work\n


@pytest.mark.parametrize("cwd", HOSTILE)
def test_json_format_keeps_one_event_on_one_line(log_to: io.StringIO, cwd: str) -> None:
    out = _emit("json", log_to, cwd)
    (line,) = out[:-1].splitlines()
    assert json.loads(line)["msg"].count(cwd) == 2  # the field itself, exactly


def test_a_traceback_s_lines_are_marked_as_its_own(log_to: io.StringIO) -> None:
    setup_logging("console", Redactor())
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(log_to)
    try:
        raise ValueError(f"bad cwd /w\n{FORGED}")
    except ValueError:
        logging.getLogger("vm_agent.session").exception("session s1 failed")
    first, *rest = log_to.getvalue().splitlines()
    assert first.endswith("vm_agent.session: session s1 failed")
    assert rest and all(line.startswith(TRACEBACK_MARK) for line in rest)
    assert any(FORGED in line for line in rest)
