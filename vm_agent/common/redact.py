"""Redaction of secrets from text that leaves the daemon (crash reports, logs).

Two kinds of rule:

- known values: the callback token (and every refreshed one, old ones kept)
  and anything else registered with `add_secret`, replaced wherever they
  appear;
- shapes: bearer credentials, `key=value` style assignments whose key names a
  secret, and tokens recognisable by themselves (`sk-...`, GitHub tokens,
  JWTs, AWS access key ids, URL passwords, PEM private keys).

The secret part becomes `[REDACTED]`; the key name, the credential scheme or a
token's well-known prefix is kept so a person can tell what was there.

Judgment calls (tested): a key matches only as a whole word or as the last
`_`/`-`/`.` part of a name, so `monkey=3` and `keyboard` stay, `API_KEY=x`,
`x-api-key: x` and `db.password=x` are redacted; `tokens used: 5` and
`max_tokens=5` stay (the name does not end in `token`); `token: 5` is
redacted (a value after a secret's name is treated as secret whatever it
looks like). A bare `Bearer` needs a credential of 8 or more characters
("bearer of bad news" stays); after `Authorization:` any value goes.
Known values shorter than 6 characters are ignored: redacting them would
shred ordinary text and they are no real secret.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 6

# A secret-naming word, possibly glued (`apikey`, `accesstoken`).
_SENSITIVE_WORD = (
    r"(?:api[_-]?key|apikey|secret[_-]?key|access[_-]?key|private[_-]?key|"
    r"auth[_-]?token|access[_-]?token|refresh[_-]?token|id[_-]?token|bearer[_-]?token|"
    r"client[_-]?secret|key|token|secret|password|passwd|pwd|passphrase|credentials?)"
)
# The whole name: optional flag dashes, any `word_`/`word-`/`word.` parts,
# then the secret word. Matches start only where a name starts (the
# lookbehind), which keeps the scan linear on long `a-a-a-...` runs.
_KEY_NAME = rf"(?<![A-Za-z0-9_.\-])-{{0,2}}(?:[A-Za-z0-9]+[_.\-])*{_SENSITIVE_WORD}"
# A value already holding `[REDACTED]` (from a shape rule) is taken whole.
_VALUE = r"""(?:"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|(?:\[REDACTED\]|[^\s"',;&{}\[\]()<>])+)"""

_SHAPES: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys, also when a tail cut them short.
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|.*\Z)",
            re.DOTALL,
        ),
        "-----BEGIN PRIVATE KEY-----" + REDACTED,
    ),
    # Authorization headers (any scheme), then bare bearer credentials.
    (
        re.compile(
            r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)"
            r"[^\s\"',;]+"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*"), rf"\1{REDACTED}"),
    # Credentials in URLs: scheme://user:password@host
    (
        re.compile(r"(?i)((?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^/\s@]+(@)"),
        rf"\1{REDACTED}\2",
    ),
    # JWTs: three base64url segments, the first a JSON header (`{"` = eyJ).
    (
        re.compile(
            r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"
        ),
        REDACTED,
    ),
    # OpenAI / Anthropic style keys: sk-..., sk-ant-..., sk-proj-...
    (
        re.compile(r"(?<![A-Za-z0-9_\-])(sk-(?:ant-|proj-)?)[A-Za-z0-9_\-]{16,}"),
        rf"\1{REDACTED}",
    ),
    # GitHub tokens.
    (re.compile(r"(?<![A-Za-z0-9_])(gh[pousr]_)[A-Za-z0-9]{20,}"), rf"\1{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_])(github_pat_)[A-Za-z0-9_]{20,}"), rf"\1{REDACTED}"),
    # AWS access key ids.
    (re.compile(r"(?<![A-Z0-9])((?:AKIA|ASIA))[A-Z0-9]{16}(?![A-Z0-9])"), rf"\1{REDACTED}"),
]

# `name = value`, `name: value`, `"name": "value"`, `--name=value`.
_ASSIGNMENT = re.compile(rf"(?i)(?P<name>{_KEY_NAME})(?P<sep>[\"']?\s*[:=]\s*)(?P<value>{_VALUE})")


def _redact_assignment(match: re.Match[str]) -> str:
    value = match["value"]
    quoted = len(value) >= 2 and value[0] in "\"'"
    return match["name"] + match["sep"] + (value[0] + REDACTED + value[-1] if quoted else REDACTED)


class Redactor:
    """Replaces secrets in text; safe to share between tasks and threads."""

    def __init__(self, extra_secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._known: re.Pattern[str] | None = None
        for secret in extra_secrets:
            self.add_secret(secret)

    def add_secret(self, value: str) -> None:
        """Redact `value` wherever it appears from now on (old ones stay)."""
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value in self._secrets:
                return
            self._secrets.add(value)
            # Longest first, so a secret containing another goes whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._known = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        known = self._known
        if known is not None:
            text = known.sub(REDACTED, text)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return _ASSIGNMENT.sub(_redact_assignment, text)
