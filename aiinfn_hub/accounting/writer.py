"""The ledger's writer: events queued in memory, written in batches, kept through an outage.

`submit` never blocks and never touches the database: the inventory watch calls it for each
event. `run` (a task) writes what is queued, oldest first, in batches of one transaction each;
an event leaves the queue only once its batch is committed. While the database is down (a
failed connect or statement) the queue waits and the writer reconnects with bounded backoff;
replays are harmless because the ledger stores each event id once. A database that answers
but cannot take events (not migrated yet, no permission) is treated the same way.

The queue is bounded (`limit` events). When it is full, new events are dropped and counted in
`dropped`, with an error logged once per outage: the ledger then misses them until the watch's
next relist submits the starts of the pods still running again (ledger.open_allocations tells
which intervals lack an end whose pod is gone). An event whose data the database refuses (a bug:
events are checked before they are queued) is retried alone, then logged, counted in `refused`
and dropped, so one bad event cannot stop the ledger nor take its batch with it.

After each relist the watch asks for a reconciliation (`reconcile`): once everything queued
before it is written, the allocations the ledger holds open whose pod is no longer live get an
end at the relist's time (their pod ended while nobody watched: an over-count bounded by that
gap). An end still queued, or a pod live again, is never closed this way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import datetime

import psycopg
from psycopg import AsyncConnection

from . import ledger
from .events import AllocationEvent

log = logging.getLogger(__name__)


class LedgerWriter:
    """Writes submitted events to the ledger at `dsn` (a libpq connection string): at most
    `limit` queued, `batch` per transaction, reconnecting after `retry` seconds (first, most).
    It writes `linger` seconds after the first event of a quiet spell, so events that trickle in
    share a transaction (the times written are the pods', so no figure changes)."""

    def __init__(
        self,
        dsn: str,
        *,
        limit: int = 100_000,
        batch: int = 500,
        retry: tuple[float, float] = (0.5, 30.0),
        linger: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.linger = linger
        self.limit = limit
        self.batch = batch
        self.retry = retry
        self.queue: deque[AllocationEvent] = deque()
        self.written = 0  # events new to the ledger
        self.dropped = 0  # events refused because the queue was full
        self.refused = 0  # events in batches the database refused
        self.failures = 0  # failed connects or writes (the database unreachable)
        self.closed = 0  # open allocations ended by a reconciliation (their pod gone)
        self.last_commit_at: float | None = None  # time.time() of the last committed batch
        self._reconcile: tuple[Callable[[], Collection[str]], datetime] | None = None
        self._connection: AsyncConnection | None = None
        self._wake = asyncio.Event()
        self._warned_full = False

    @property
    def pending(self) -> int:
        return len(self.queue)

    def submit(self, event: AllocationEvent) -> bool:
        """Queue an event; False (and counted) if the queue is full."""
        if len(self.queue) >= self.limit:
            self.dropped += 1
            if not self._warned_full:
                self._warned_full = True
                log.error("Accounting queue full (%d events): dropping new events", self.limit)
            return False
        self.queue.append(event)
        self._wake.set()
        return True

    async def _connect(self) -> AsyncConnection:
        if self._connection is None or self._connection.closed:
            self._connection = await AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=10
            )
        return self._connection

    async def flush(self) -> None:
        """Write everything queued now. Raises psycopg.Error while the database cannot take
        the events (unreachable, not migrated, no permission): what was not committed stays
        queued."""
        while self.queue:
            events = [self.queue[i] for i in range(min(self.batch, len(self.queue)))]
            try:
                await self._write(events)
            except psycopg.Error:
                await self.disconnect()
                raise
            for _ in events:
                self.queue.popleft()
            self._warned_full = False

    async def _write(self, events: list[AllocationEvent]) -> None:
        """One transaction; if the database refuses the data itself, each event alone, and
        those it still refuses are dropped and counted."""
        connection = await self._connect()
        try:
            async with connection.transaction():
                self.written += await ledger.insert(connection, events)
            self.last_commit_at = time.time()
        except (psycopg.DataError, psycopg.IntegrityError) as error:
            if len(events) > 1:
                for event in events:
                    await self._write([event])
                return
            log.error("Accounting event %s refused: %s", events[0].event_id, error)
            self.refused += 1

    async def run(self) -> None:
        """Write as events come, forever (cancel the task to stop; `close` flushes first)."""
        delay = self.retry[0]
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.linger)
            self._wake.clear()
            try:
                await self.flush()
                await self._reconciled()
                delay = self.retry[0]
            except (psycopg.Error, OSError) as error:
                self.failures += 1
                log.warning(
                    "Accounting database not writable (%s); %d events queued, retry in %.1fs",
                    type(error).__name__,
                    len(self.queue),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry[1])
                self._wake.set()

    def reconcile(self, live: Callable[[], Collection[str]], at: datetime) -> None:
        """After a relist at `at`: end the open allocations whose uid `live()` no longer holds,
        once what is queued now is written (a later request replaces a pending one)."""
        self._reconcile = (live, at)
        self._wake.set()

    async def _reconciled(self) -> None:
        """Carry out a pending reconciliation; raises psycopg.Error like flush."""
        request = self._reconcile
        if request is None:
            return
        try:
            starts = await ledger.open_starts(await self._connect())
        except psycopg.Error:
            await self.disconnect()
            raise
        live, at = request
        # Read after the query: a pod seen or an end queued meanwhile is not closed here.
        keep = set(live()) | {e.allocation.allocation for e in self.queue if e.phase == "end"}
        for start in starts:
            if start.allocation.allocation not in keep:
                if self.submit(AllocationEvent(start.allocation, "end", max(at, start.at))):
                    self.closed += 1
        if self._reconcile is request:
            self._reconcile = None

    async def disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            try:
                await connection.close()
            except psycopg.Error:
                pass

    async def close(self, timeout: float = 10.0) -> None:
        """Try once more to write what is queued (at shutdown), then disconnect."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except (psycopg.Error, OSError, TimeoutError):
            log.error("Accounting: %d events not written at shutdown", len(self.queue))
        finally:
            await self.disconnect()
