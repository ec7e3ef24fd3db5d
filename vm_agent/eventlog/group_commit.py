"""The commit pipeline behind the event log: batches, group commit, the commit cadence.

Every append or registry change joins the open batch; one task commits batches in order on
the writer thread, one transaction each, so appenders that arrive while a commit runs share
the next one. A commit starts at most every `interval_s` while work keeps coming (an idle
pipeline commits at once). After each commit `on_commit` gets the batch's events, on the
event loop, before the batch's waiters resume.

If a commit fails the pipeline stops: that batch and every later one fail with
`EventLogClosed`, and `run` raises the error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import anyio

from .checkpointer import Checkpointer
from .model import Event, EventLogClosed
from .writer import PendingEvent, PendingOp, Writer
from .writer_thread import WriterThread

MAX_BATCH_ITEMS = 4096

OnCommit = Callable[[Sequence[Event]], None]


class Batch:
    """Items committed together; `wait(i)` gives the i-th item's result after the commit."""

    __slots__ = ("done", "error", "items", "results")

    def __init__(self) -> None:
        self.items: list[PendingEvent | PendingOp] = []
        self.done = anyio.Event()
        self.results: list[object] = []
        self.error: BaseException | None = None

    async def wait(self, index: int) -> object:
        await self.done.wait()
        if self.error is not None:
            raise EventLogClosed(f"event log write failed: {self.error!r}") from self.error
        return self.results[index]


class Appended:
    """A submitted event: its seq is fixed; `durable()` waits for its commit."""

    __slots__ = ("_batch", "_index", "seq", "session_id")

    def __init__(self, session_id: str, seq: int, batch: Batch, index: int) -> None:
        self.session_id = session_id
        self.seq = seq
        self._batch = batch
        self._index = index

    async def durable(self) -> Event:
        result = await self._batch.wait(self._index)
        assert isinstance(result, Event)
        return result


class GroupCommit:
    def __init__(
        self,
        writer: Writer,
        thread: WriterThread,
        checkpointer: Checkpointer,
        *,
        interval_s: float,
        on_commit: OnCommit,
    ) -> None:
        self.interval_s = interval_s
        self._writer = writer
        self._thread = thread
        self._checkpointer = checkpointer
        self._on_commit = on_commit
        self._batches: deque[Batch] = deque([Batch()])
        self._have_work = anyio.Event()
        self.failed: BaseException | None = None

    def enqueue(self, item: PendingEvent | PendingOp) -> tuple[Batch, int]:
        batch = self._batches[-1]
        if len(batch.items) >= MAX_BATCH_ITEMS:
            batch = Batch()
            self._batches.append(batch)
        batch.items.append(item)
        self._have_work.set()
        return batch, len(batch.items) - 1

    async def op(self, op: PendingOp) -> object:
        batch, index = self.enqueue(op)
        return await batch.wait(index)

    async def run(self) -> None:
        """Commits batches as they fill, on the cadence (module doc), until cancelled."""
        last_start = -float("inf")
        while True:
            if not self._batches[0].items:
                await self._have_work.wait()
                self._have_work = anyio.Event()
                continue
            wait = last_start + self.interval_s - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)  # appends arriving meanwhile join this commit
            last_start = anyio.current_time()
            await self._commit_next()

    async def drain(self, error: BaseException) -> None:
        """Commits what is queued (a write is never interrupted midway), then fails the rest.

        For closing: call it shielded, after `run` has stopped.
        """
        while self.failed is None and self._batches[0].items:
            await self._commit_next()
        self._fail_pending(error)

    async def _commit_next(self) -> None:
        batch = self._batches[0]
        if len(self._batches) == 1:
            self._batches.append(Batch())  # later appends join the next commit
        self._batches.popleft()
        try:
            # Shielded: a commit is never abandoned halfway by a cancellation,
            # so an append is never told "failed" for an event that landed.
            with anyio.CancelScope(shield=True):
                items = batch.items
                batch.results = await self._thread.call(lambda: self._writer.write_batch(items))
        except BaseException as exc:
            self.failed = exc
            batch.error = exc
            batch.done.set()
            self._fail_pending(exc)
            raise
        self._checkpointer.committed(self._writer.last_batch_bytes)
        events = [r for r in batch.results if isinstance(r, Event)]
        if events:
            self._on_commit(events)
        batch.done.set()

    def _fail_pending(self, exc: BaseException) -> None:
        for batch in self._batches:
            if not batch.done.is_set():
                batch.error = exc
                batch.done.set()
