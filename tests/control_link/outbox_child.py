"""A process holding an event log and an outbox sender, for the SIGKILL test.

`python -m tests.control_link.outbox_child LOG URL NODE TOKEN_FILE APPEND BATCH`: appends
APPEND events across three sessions, sends the outbox in batches of BATCH, prints DONE when
the cursor has caught up. Debug logs (one line per posted batch) go to stderr.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import anyio

from vm_agent.common.redact import Redactor
from vm_agent.control_link import CallbackTokenStore, ControlPlaneClient, OutboxSender, RetryPolicy
from vm_agent.eventlog import EventLog


def event_for(i: int) -> tuple[str, str, dict[str, object]]:
    sid = f"s-{'abc'[i % 3]}"
    kind = i % 4
    if kind == 0:
        return sid, "session.state", {"state": "ready", "i": i}
    if kind == 1:
        update = {
            "sessionUpdate": "agent_message_chunk",
            "content": {"type": "text", "text": f"{i}"},
        }
        return sid, "acp.update", {"sessionId": "x", "update": update}
    if kind == 2:
        return sid, "acp.update", {"sessionId": "x", "update": {"sessionUpdate": "tool_call"}}
    return sid, "prompt.finished", {"prompt_id": f"p{i}", "outcome": "completed"}


async def main(argv: list[str]) -> None:
    log_path, url, node, token_file = argv[:4]
    append, batch = int(argv[4]), int(argv[5])
    tokens = CallbackTokenStore.load(token_file, redactor=Redactor())
    retry = RetryPolicy(attempts=2, initial_s=0.02, max_s=0.1, timeout_s=5, connect_timeout_s=2)
    async with (
        EventLog.open(Path(log_path)) as log,
        ControlPlaneClient(url, node, tokens, retry=retry) as client,
    ):
        base = sum(log.heads().values())
        handles = [log.submit(*event_for(i)) for i in range(base, base + append)]
        last = (await handles[-1].durable()).rowid  # commits are in submission order
        sender = OutboxSender(
            log, client, batch_max_events=batch, backoff_initial_s=0.02, backoff_max_s=0.2
        )
        async with anyio.create_task_group() as tg:
            await tg.start(sender.run)
            while sender.cursor < last:
                await anyio.sleep(0.02)
            print("DONE", flush=True)
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s %(message)s")
    logging.getLogger("vm_agent.control_link.outbox").setLevel(logging.DEBUG)
    anyio.run(main, sys.argv[1:7])
