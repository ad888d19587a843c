"""After a relist the writer ends the open allocations whose pod is gone, at the relist's time,
and never one whose pod is live or whose real end is still queued (a real PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.writer import LedgerWriter
from tests.accounting.conftest import until

T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)
RELIST = T0 + timedelta(minutes=10)


def event(uid: str, phase: str, at: datetime) -> AllocationEvent:
    return AllocationEvent(Allocation(uid, "alice", "", "t4", "notebook", "", 1, 0), phase, at)


async def ends(dsn: str) -> dict[str, datetime]:
    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute(
            "SELECT allocation, at FROM accounting_events WHERE phase = 'end'"
        )
        return {row[0]: row[1] for row in await cursor.fetchall()}


async def test_a_relist_ends_the_allocations_whose_pod_is_gone(ledger_db: str):
    writer = LedgerWriter(ledger_db, retry=(0.05, 0.2))
    for uid in ("live", "gone", "ended", "late"):
        writer.submit(event(uid, "start", T0))
    writer.submit(event("late", "start", RELIST + timedelta(seconds=5)))  # replay: no change
    await writer.flush()
    writer.submit(event("ended", "end", T0 + timedelta(minutes=3)))  # its real end, queued
    task = asyncio.create_task(writer.run())
    try:
        writer.reconcile(lambda: {"live"}, RELIST)
        await until(lambda: writer.closed == 2 and writer.pending == 0, "the gone pods ended")
        assert await ends(ledger_db) == {
            "gone": RELIST,
            "late": RELIST,
            "ended": T0 + timedelta(minutes=3),
        }
    finally:
        task.cancel()
        await writer.disconnect()


async def test_an_end_still_queued_is_not_replaced_by_the_relists(ledger_db: str):
    async with await AsyncConnection.connect(ledger_db) as connection:
        await connection.execute("DELETE FROM accounting_events")
    writer = LedgerWriter(ledger_db)
    writer.submit(event("p", "start", T0))
    await writer.flush()
    writer.submit(event("p", "end", T0 + timedelta(minutes=1)))
    writer.reconcile(lambda: set(), RELIST)
    await writer._reconciled()  # before the queued end is written, as a race would have it
    assert writer.closed == 0
    await writer.close()
    assert await ends(ledger_db) == {"p": T0 + timedelta(minutes=1)}
