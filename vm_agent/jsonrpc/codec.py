"""JSON text to values and back: orjson on the hot path, the standard library where it differs.

orjson parses and serializes several times faster than ``json`` (the relay decodes every
agent line and encodes every event; see the README's performance section), but it treats
three inputs differently, and for those we use the standard library so nothing an agent
sends is refused or changed:

- escaped lone surrogates (``"\\ud800"``, which JavaScript agents can emit): orjson refuses
  them; ``json`` decodes them (and we write them back ASCII-escaped);
- integers of 19 digits or more: orjson turns those past 64 bits into floats; any line with
  such a digit run is parsed by ``json``, which keeps them exact;
- ``NaN``/``Infinity`` (not JSON): orjson refuses them, ``json`` accepts them as before.

Nesting deeper than the parser allows is a ``ValueError`` either way (``json`` would raise
``RecursionError``). Serialized output is compact UTF-8 with keys in insertion order;
non-finite floats become ``null`` (orjson; JSON has no NaN), and values orjson cannot write
(a set, an arbitrary object) raise ``TypeError`` (orjson does write dataclasses, enums and
datetimes, which the daemon never hands it).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A run of 19 digits, found by mapping every digit to "9" (bytes.translate and `in` are
# C loops, ~6x cheaper than a regular expression on an agent's line).
_DIGITS_TO_NINES = bytes.maketrans(b"012345678", b"999999999")
_LONG_RUN = b"9" * 19
_LONG_DIGITS_S = re.compile(r"[0-9]{19}")


def loads(text: bytes | str) -> Any:
    """Parses one JSON text; raises ValueError (UnicodeDecodeError included) when it is not."""
    if isinstance(text, bytes):
        has_long_number = _LONG_RUN in text.translate(_DIGITS_TO_NINES)
    else:
        has_long_number = _LONG_DIGITS_S.search(text) is not None
    if not has_long_number:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # maybe one of the cases the standard library takes (module doc)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value`` (valid UTF-8 even for strings with lone surrogates)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass  # a lone surrogate, an integer past 64 bits, a non-str key, or not JSON at all
    try:
        return _stdlib_dumps(value, ascii_only=False).encode()
    except UnicodeEncodeError:
        return _stdlib_dumps(value, ascii_only=True).encode()


def _stdlib_dumps(value: Any, *, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)
