"""Serialization of an event to the stored payload (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vm_agent.jsonrpc import codec


def encode_payload(
    seq: int, session_id: str, ts: float, type: str, data: Mapping[str, Any]
) -> tuple[str, int]:
    """The notification params as compact JSON, and its size in UTF-8 bytes.

    `data` keeps its key order. Non-ASCII text is kept as is, except strings holding lone
    surrogates (which a malformed agent line can decode to): those are ASCII-escaped so the
    payload still stores as valid UTF-8 (see `vm_agent.jsonrpc.codec`). Raises TypeError
    for data that is not JSON (a set, an object), before anything is assigned; a
    non-finite float in `data` is stored as null.
    """
    if not math.isfinite(ts):
        raise ValueError(f"event ts must be finite, got {ts!r}")
    body = b"".join(
        (
            b'{"seq":',
            str(seq).encode(),
            b',"session_id":',
            codec.dumps(session_id),
            b',"ts":',
            repr(float(ts)).encode(),
            b',"type":',
            codec.dumps(type),
            b',"data":',
            codec.dumps(data),
            b"}",
        )
    )
    return body.decode(), len(body)
