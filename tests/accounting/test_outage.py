"""A database outage mid-stream loses nothing: the writer keeps events and replays them.

The test has a PostgreSQL of its own (it stops it), killed by pid with SIGQUIT: an immediate
shutdown, as in a crash, so the restart recovers from the WAL.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

# Until pyproject.toml declares psycopg, an environment built without it skips this module
# (./dev test collects every module in each environment) instead of failing to collect.
# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub.accounting import ledger
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.writer import LedgerWriter
from tests import postgres as pg
from tests.accounting.conftest import until

T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[pg.Postgres]:
    own = pg.start(pg.initdb())
    try:
        yield own
    finally:
        pg.remove(own)


def event(uid: str, phase: str, seconds: int) -> AllocationEvent:
    allocation = Allocation(uid, "alice", "cms", "a100", "notebook", "", 1, 1000)
    return AllocationEvent(allocation, phase, T0 + timedelta(seconds=seconds))


async def stored(dsn: str) -> set[str]:
    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute("SELECT event_id FROM accounting_events")
        return {row[0] for row in await cursor.fetchall()}


async def test_a_database_stopped_and_restarted_mid_stream_loses_nothing(server: pg.Postgres):
    name = pg.create_database(server)
    ledger.upgrade(server.url(name))
    dsn = server.dsn(name)
    writer = LedgerWriter(dsn, retry=(0.05, 0.5))
    task = asyncio.create_task(writer.run())
    try:
        before = [event("p1", "start", 0), event("p2", "start", 10)]
        for e in before:
            writer.submit(e)
        await until(lambda: writer.written == 2, "the first events written")

        pg.stop(server, signal.SIGQUIT)
        during = [event("p1", "end", 3600), event("p3", "start", 20), event("p2", "start", 10)]
        for e in during:
            writer.submit(e)
        await until(lambda: writer.failures >= 2, "the writer to fail and retry")
        assert writer.pending == 3

        pg.start(server)
        await until(lambda: writer.pending == 0, "the queued events written")
        assert await stored(dsn) == {"p1:start", "p1:end", "p2:start", "p3:start"}
        assert (writer.written, writer.dropped, writer.refused) == (4, 0, 0)
        async with await AsyncConnection.connect(dsn) as connection:
            usage = await ledger.usage(connection, T0, T0 + timedelta(hours=2), T0 + timedelta(2))
        assert sum(u.unit_seconds for u in usage) == 3600 + (7200 - 10) + (7200 - 20)
    finally:
        task.cancel()
        await writer.disconnect()
