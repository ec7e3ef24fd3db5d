"""The outbox sender: the event log past a delivery cursor, posted to the control plane.

The outbox is the event log itself; the cursor (`control-plane` by default) is stored
beside it and moves only after the control plane acknowledged a batch, so delivery is at
least once and the control plane makes it exactly once by (session id, seq). Events that
are not forwarded move the cursor too. Batches go one at a time, in log order (so in seq
order per session); nothing beyond one batch is held in memory.

What is forwarded (the control plane's record of a session, not its full stream):
session.state, prompt.started, prompt.finished, agent.crash_report, permission.requested,
permission.resolved, and acp.update only for `agent_message_chunk` (the chat record; tool
calls, plans, thoughts and other updates stay on the VM for viewers).

Failures: network errors, 5xx and 429 (after the client's own retries) back off with
jitter up to `backoff_max_s` and retry the same batch; 401/403 wait for the heartbeat
interval (or a token change); another 4xx splits the batch to isolate the event the
control plane refuses, which is then skipped with an error log (at least once cannot
hold for an event the other side will never take).

`depth` (and the `outbox_depth` gauge) is the last rowid seen minus the cursor: an upper
bound that counts events the filter passes over as well (cheap, no count query).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Collection, Sequence

import anyio
from anyio.abc import TaskStatus

from vm_agent.control_link.client import (
    CallbackError,
    CallbackForbidden,
    CallbackRejected,
    CallbackUnauthorized,
    ControlPlaneClient,
)
from vm_agent.control_link.health import LinkMetrics
from vm_agent.eventlog import Event, EventLog

log = logging.getLogger("vm_agent.control_link.outbox")

DEFAULT_TYPES: frozenset[str] = frozenset(
    {
        "session.state",
        "prompt.started",
        "prompt.finished",
        "agent.crash_report",
        "permission.requested",
        "permission.resolved",
        "acp.update",
    }
)
# Which `acp.update` kinds (`update.sessionUpdate`) go to the control plane.
CHAT_UPDATES: frozenset[str] = frozenset({"agent_message_chunk"})


def backoff_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff with equal jitter: never below half the step (no hot loop)."""
    step = min(max_s, initial_s * 2.0 ** max(0, failures - 1))
    return step / 2 + random.uniform(0, step / 2)  # noqa: S311 (jitter, not a secret)


def is_forwarded(event: Event, acp_updates: Collection[str] | None = CHAT_UPDATES) -> bool:
    """Whether an event of a forwarded type passes the acp.update filter (pure)."""
    if event.type != "acp.update" or acp_updates is None:
        return True
    try:
        update = json.loads(event.payload)["data"]["update"]["sessionUpdate"]
    except (ValueError, KeyError, TypeError):
        return False
    return update in acp_updates


class OutboxSender:
    def __init__(
        self,
        log: EventLog,
        client: ControlPlaneClient,
        *,
        cursor_name: str = "control-plane",
        types: Collection[str] = DEFAULT_TYPES,
        acp_updates: Collection[str] | None = CHAT_UPDATES,
        batch_max_events: int = 500,
        batch_max_bytes: int = 1024 * 1024,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        auth_retry_s: Callable[[], float] | float = 30.0,
        idle_wait_s: float = 30.0,
        metrics: LinkMetrics | None = None,
    ) -> None:
        if batch_max_events < 1 or batch_max_bytes < 1:
            raise ValueError("batch bounds must be positive")
        self.log = log
        self.client = client
        self.cursor_name = cursor_name
        self.types = frozenset(types)
        self.acp_updates = None if acp_updates is None else frozenset(acp_updates)
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = batch_max_bytes
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._auth_retry_s = auth_retry_s
        self.idle_wait_s = idle_wait_s
        self.metrics = metrics
        self.cursor = 0
        self.last_rowid = 0
        self.delivered = 0  # events acknowledged since start
        self.skipped = 0  # events the control plane refused for good
        self._wake = anyio.Event()
        self._token_changed = anyio.Event()

    @property
    def depth(self) -> int:
        return max(0, self.last_rowid - self.cursor)

    def token_changed(self) -> None:
        """A new token is in the store: retry a batch held back by a 401/403 now."""
        self._token_changed.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.cursor = await self.log.get_delivery_cursor(self.cursor_name)
        # The newest rowid, for `depth` from the start: a read matching no type returns
        # no events and the position past everything stored.
        _, top = await self.log.read_global(self.cursor, 1, 1, types=())
        self.last_rowid = max(self.last_rowid, self.cursor, top)
        remove = self.log.add_listener(self._on_commit)
        try:
            task_status.started()
            while True:
                # A fresh event before the read: a commit during the read wakes the wait.
                self._wake = anyio.Event()
                events, upto = await self.log.read_global(
                    self.cursor, self.batch_max_events, self.batch_max_bytes, self.types
                )
                self.last_rowid = max(self.last_rowid, upto)
                if upto <= self.cursor:
                    self._publish_depth()
                    with anyio.move_on_after(self.idle_wait_s):
                        await self._wake.wait()
                    continue
                batch = [e for e in events if is_forwarded(e, self.acp_updates)]
                if batch:
                    await self._deliver(batch)
                await self.log.set_delivery_cursor(self.cursor_name, upto)
                self.cursor = upto
                self._publish_depth()
        finally:
            remove()

    def _on_commit(self, events: Sequence[Event]) -> None:
        if events:
            self.last_rowid = max(self.last_rowid, events[-1].rowid)
        self._publish_depth()
        self._wake.set()

    def _publish_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.outbox_depth.set(self.depth)

    async def _deliver(self, batch: Sequence[Event]) -> None:
        """Post `batch` until acknowledged (or, for a refused single event, skipped)."""
        failures = 0
        while True:
            log.debug(
                "outbox: posting %d events (rowids %d..%d)",
                len(batch),
                batch[0].rowid,
                batch[-1].rowid,
            )
            try:
                stored, duplicates = await self.client.post_events(batch)
            except (CallbackUnauthorized, CallbackForbidden):
                # The link's health logs the state change once; wait for the interval.
                self._token_changed = anyio.Event()
                with anyio.move_on_after(self._auth_wait()):
                    await self._token_changed.wait()
                continue
            except CallbackRejected as exc:
                if len(batch) > 1:
                    half = len(batch) // 2
                    await self._deliver(batch[:half])
                    await self._deliver(batch[half:])
                    return
                event = batch[0]
                log.error(
                    "outbox: control plane refuses event %s seq %d (%s): skipped",
                    event.session_id,
                    event.seq,
                    exc,
                )
                self.skipped += 1
                return
            except CallbackError as exc:
                failures += 1
                delay = self._backoff(failures)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "outbox: batch not delivered (%s); retrying in %.1fs", exc, delay)
                await anyio.sleep(delay)
                continue
            self.delivered += len(batch)
            log.debug("outbox: delivered (stored %d, duplicates %d)", stored, duplicates)
            return

    def _backoff(self, failures: int) -> float:
        return backoff_delay(failures, self.backoff_initial_s, self.backoff_max_s)

    def _auth_wait(self) -> float:
        value = self._auth_retry_s
        return float(value() if callable(value) else value)
