"""The hostile scenario's parts that the VM test drives (memory, CPU, connect) still work,
and how it reports a failed attack.

Here only that they run: the limits themselves need the memory and cpu controllers this
machine lacks (the VM test checks them, see the README's containment section).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.session.harness import fake, running, text_prompt

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_allocate_burn_and_connect(tmp_path: Path) -> None:
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        attacks = [
            {"allocate_mb": 32},
            {"burn_cpu_s": 0.2},
            {"connect": ["127.0.0.1", listener.getsockname()[1]]},
            {"connect": ["127.0.0.1", closed.getsockname()[1]]},
            {"open": str(tmp_path / "no-such-file")},  # a mistake, not a refusal
            {"opne": "/etc/hostname"},  # a mistyped attack: no errno at all
        ]
        async with running(tmp_path, [fake("hostile")]) as h:
            session = await h.ready("hostile")
            outcome = await session.prompt("p", text_prompt(json.dumps(attacks)))
            assert outcome.outcome == "completed"
            [event] = [e for e in await h.events(session) if e.type == "acp.update"]
    results = json.loads(event.data["update"]["content"]["text"])
    assert [r["ok"] for r in results] == [True, True, True, False, False, False]
    # How each failed, for tests to tell a refusal from a mistake.
    assert [r["refused"] for r in results] == [None, None, None, "ECONNREFUSED", "ENOENT", None]
    assert results[5]["detail"].startswith("ValueError: unknown attack")
    assert results[0]["detail"] == "allocated 32 MiB"
    assert json.loads(results[1]["detail"])["cpu_s"] > 0
    assert "ConnectionRefusedError" in results[3]["detail"]
