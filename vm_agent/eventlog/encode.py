"""Serialization of an event to the stored payload (pure)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# Built once: json.dumps with non-default options builds an encoder per call.
_ENCODERS = {
    ascii_only: json.JSONEncoder(ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)
    for ascii_only in (False, True)
}


def _dumps(value: Any, ascii_only: bool) -> str:
    return _ENCODERS[ascii_only].encode(value)


def encode_payload(
    seq: int, session_id: str, ts: float, type: str, data: Mapping[str, Any]
) -> tuple[str, int]:
    """The notification params as compact JSON, and its size in UTF-8 bytes.

    `data` keeps its key order (json.dumps follows dict order). Non-ASCII text
    is kept as is, except where the text holds lone surrogates (which a
    malformed agent line can decode to): then the payload is ASCII-escaped so
    it still stores as valid UTF-8. Raises ValueError/TypeError for data that
    is not JSON (NaN, sets, ...), before anything is assigned.
    """
    if not math.isfinite(ts):
        raise ValueError(f"event ts must be finite, got {ts!r}")
    for ascii_only in (False, True):
        text = (
            f'{{"seq":{seq},"session_id":{_dumps(session_id, ascii_only)},'
            f'"ts":{float(ts)!r},"type":{_dumps(type, ascii_only)},'
            f'"data":{_dumps(data, ascii_only)}}}'
        )
        try:
            return text, len(text.encode("utf-8"))
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: ASCII JSON always encodes")
