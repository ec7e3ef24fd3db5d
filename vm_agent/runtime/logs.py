"""Logging: one event a line, JSON for journald or readable for a terminal; never a secret.

One event is one line in either format, whatever a field holds: JSON escapes by itself;
the console format escapes every control character (a newline in a session's cwd once
forged a whole log line), the Unicode line separators, and indents a traceback's lines
under a marker no log line starts with.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Literal

from vm_agent.common.redact import Redactor

LogFormat = Literal["json", "console"]

# C0 and C1 controls, DEL, and what terminals or editors take for a line break.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
# Continuation lines of a traceback begin so; no log line does (they begin with a time).
TRACEBACK_MARK = "  | "


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_field(text: str) -> str:
    """`text` on one line: control characters (escape sequences included) and line
    separators as Python-style escapes."""
    return _UNSAFE.sub(_escape_char, text)


def indent_block(text: str) -> str:
    """A multi-line block (a traceback) under TRACEBACK_MARK, each line escaped."""
    return "\n".join(TRACEBACK_MARK + escape_field(line) for line in text.splitlines())


class RedactingFilter(logging.Filter):
    """Last line of defence: whatever a record says is redacted before it is written."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = self.redactor.redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor.redact(
                logging.Formatter().formatException(record.exc_info)
            )
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        # JSON escapes the controls; these three it leaves, and some readers split on them.
        return json.dumps(out, ensure_ascii=False).translate(_JSON_LINE_BREAKS)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        name, message = escape_field(record.name), escape_field(record.getMessage())
        line = f"{when} {record.levelname:<7} {name}: {message}"
        exc_text = record.exc_text
        if not exc_text and record.exc_info:  # no RedactingFilter (uvicorn's loggers)
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            line += "\n" + indent_block(exc_text)
        return line


def setup_logging(fmt: LogFormat, redactor: Redactor, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
