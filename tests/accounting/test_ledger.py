"""The ledger against a real PostgreSQL: migrations, idempotent inserts, usage to the second."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

# Until pyproject.toml declares psycopg, an environment built without it skips this module
# (./dev test collects every module in each environment) instead of failing to collect.
# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub.accounting import events, ledger
from aiinfn_hub.accounting.events import Allocation, AllocationEvent, InvalidEvent
from aiinfn_hub.accounting.ledger import Usage
from aiinfn_hub.accounting.writer import LedgerWriter
from tests.accounting.conftest import until
from tests.postgres import Postgres, create_database

T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def allocation(uid: str, **fields) -> Allocation:
    values = {
        "user": "alice",
        "project": "cms",
        "model": "a100",
        "kind": "notebook",
        "site": "",
        "units": 2,
        "cpu_millis": 4000,
    }
    return Allocation(allocation=uid, **{**values, **fields})


def start(uid: str, at: datetime, **fields) -> AllocationEvent:
    return AllocationEvent(allocation(uid, **fields), "start", at)


def end(uid: str, at: datetime, **fields) -> AllocationEvent:
    return AllocationEvent(allocation(uid, **fields), "end", at)


async def write(dsn: str, batch: list[AllocationEvent]) -> int:
    async with await AsyncConnection.connect(dsn) as connection:
        return await ledger.insert(connection, batch)


async def read_usage(dsn: str, since=T0 - DAY, until=T0 + DAY, now=T0 + DAY, **who) -> list:
    async with await AsyncConnection.connect(dsn) as connection:
        return await ledger.usage(connection, since, until, now, **who)


async def clear(dsn: str) -> None:
    async with await AsyncConnection.connect(dsn) as connection:
        await connection.execute("DELETE FROM accounting_events")


@pytest.fixture
async def dsn(ledger_db: str) -> str:
    """The module's ledger, emptied for each test."""
    await clear(ledger_db)
    return ledger_db


def test_migrations_go_from_empty_to_head_and_back(postgres: Postgres):
    name = create_database(postgres)
    url = postgres.url(name)

    def tables() -> set[str]:
        with psycopg.connect(postgres.dsn(name)) as connection:
            rows = connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            return {row[0] for row in rows}

    assert tables() == set()
    ledger.upgrade(url)
    assert tables() == {"accounting_events", "quota_adjustments", "aiinfn_accounting_version"}
    with psycopg.connect(postgres.dsn(name)) as connection:
        version = connection.execute("SELECT version_num FROM aiinfn_accounting_version")
        assert version.fetchall() == [("0002",)]
    ledger.upgrade(url)  # at head already: nothing to do
    ledger.downgrade(url, "base")
    assert tables() == {"aiinfn_accounting_version"}
    ledger.upgrade(url)
    assert "accounting_events" in tables()


def test_the_columns_are_as_long_as_the_events_allow(ledger_db: str):
    with psycopg.connect(ledger_db) as connection:
        rows = connection.execute(
            "SELECT column_name, character_maximum_length FROM information_schema.columns "
            "WHERE table_name = 'accounting_events' AND character_maximum_length IS NOT NULL"
        )
        sizes = dict(rows.fetchall())
    assert sizes == {
        "event_id": events.MAX_ALLOCATION + len(":start"),
        "allocation": events.MAX_ALLOCATION,
        "phase": 5,
        "user_name": events.MAX_USER,
        "project": events.MAX_NAME,
        "model": events.MAX_NAME,
        "kind": len("offloaded"),
        "site": events.MAX_NAME,
    }


async def test_a_replayed_event_is_counted_once(dsn: str):
    first = [start("pod-1", T0), end("pod-1", T0 + timedelta(hours=1))]
    assert await write(dsn, first) == 2
    # A restarted hub replays the same pod; its end is seen later but has the same id.
    replay = [start("pod-1", T0), end("pod-1", T0 + timedelta(hours=5)), start("pod-1", T0)]
    assert await write(dsn, replay) == 0
    assert await read_usage(dsn) == [
        Usage("alice", "cms", "a100", "notebook", "", 2 * 3600, 4000 * 3600)
    ]


async def test_an_interval_is_measured_to_the_second(dsn: str):
    await write(dsn, [start("pod-1", T0), end("pod-1", T0 + timedelta(seconds=3723))])
    [usage] = await read_usage(dsn)
    assert usage.unit_seconds == 2 * 3723
    assert usage.unit_hours == Fraction(2 * 3723, 3600)
    assert usage.cpu_hours == Fraction(4 * 3723, 3600)


async def test_an_open_interval_counts_up_to_now_and_periods_clip(dsn: str):
    await write(dsn, [start("pod-1", T0)])
    [usage] = await read_usage(dsn, now=T0 + timedelta(seconds=61))
    assert usage.unit_seconds == 2 * 61
    # The period ends before now: counted to its end; starts after the start: from its start.
    [usage] = await read_usage(dsn, since=T0 + timedelta(seconds=10), until=T0 + timedelta(30))
    assert usage.unit_seconds == 2 * (int(DAY.total_seconds()) - 10)
    assert await read_usage(dsn, since=T0 - DAY, until=T0) == []
    async with await AsyncConnection.connect(dsn) as connection:
        assert await ledger.open_allocations(connection) == ["pod-1"]


async def test_usage_is_grouped_by_user_project_model_kind_and_site(dsn: str):
    hour = timedelta(hours=1)
    batch = [
        start("a", T0),
        end("a", T0 + hour),
        start("b", T0, user="bob", units=1),
        end("b", T0 + 2 * hour, user="bob", units=1),
        start("c", T0, kind="offloaded", site="infn-t1", model="t4", units=4, cpu_millis=0),
        end("c", T0 + hour, kind="offloaded", site="infn-t1", model="t4", units=4, cpu_millis=0),
        start("d", T0, model="", units=0, cpu_millis=500, kind="batch", project=""),
        end("d", T0 + 3 * hour, model="", units=0, cpu_millis=500, kind="batch", project=""),
    ]
    await write(dsn, batch)
    assert await read_usage(dsn) == [
        Usage("alice", "", "", "batch", "", 0, 500 * 3 * 3600),
        Usage("alice", "cms", "a100", "notebook", "", 2 * 3600, 4000 * 3600),
        Usage("alice", "cms", "t4", "offloaded", "infn-t1", 4 * 3600, 0),
        Usage("bob", "cms", "a100", "notebook", "", 2 * 3600, 4000 * 2 * 3600),
    ]
    assert [u.user for u in await read_usage(dsn, user="bob")] == ["bob"]
    assert len(await read_usage(dsn, project="cms")) == 3


async def test_a_field_too_long_is_refused_before_sql(dsn: str):
    writer = LedgerWriter(dsn)
    with pytest.raises(InvalidEvent, match="user is longer than 64"):
        writer.submit(start("pod-1", T0, user="u" * 65))
    assert writer.pending == 0
    with pytest.raises(InvalidEvent, match="whole second"):
        await read_usage(dsn, now=T0 + timedelta(microseconds=1))
    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute("SELECT count(*) FROM accounting_events")
        assert await cursor.fetchone() == (0,)
    # The schema would refuse it too (the second line of defence).
    with pytest.raises(psycopg.errors.StringDataRightTruncation):
        async with await AsyncConnection.connect(dsn) as connection:
            await connection.execute(
                "INSERT INTO accounting_events VALUES ('p:start', 'p', 'start', "
                "date_trunc('second', now()), %s, '', '', 'notebook', '', 0, 0)",
                ["u" * 65],
            )


async def test_the_writer_writes_what_is_submitted(dsn: str):
    writer = LedgerWriter(dsn, batch=2)
    for event in (start("p1", T0), start("p2", T0), start("p3", T0), start("p1", T0)):
        assert writer.submit(event)
    await writer.flush()
    assert (writer.pending, writer.written) == (0, 3)
    await writer.close()


async def test_a_full_queue_drops_new_events_and_counts_them(dsn: str):
    writer = LedgerWriter(dsn, limit=2)
    assert writer.submit(start("p1", T0)) and writer.submit(start("p2", T0))
    assert not writer.submit(start("p3", T0))
    assert (writer.pending, writer.dropped) == (2, 1)
    await writer.flush()
    assert writer.submit(start("p3", T0))
    await writer.close()
    assert writer.written == 3


async def test_a_ledger_not_yet_migrated_keeps_events_until_it_is(postgres: Postgres):
    name = create_database(postgres)
    writer = LedgerWriter(postgres.dsn(name), retry=(0.05, 0.2))
    writer.submit(start("p1", T0))
    task = asyncio.create_task(writer.run())
    try:
        await until(lambda: writer.failures >= 2, "the writer to retry")
        assert (writer.pending, writer.refused) == (1, 0)
        ledger.upgrade(postgres.url(name))
        await until(lambda: writer.pending == 0, "the event written")
        assert writer.written == 1
    finally:
        task.cancel()
        await writer.disconnect()


async def test_an_event_the_database_refuses_is_dropped_alone(dsn: str):
    bad = start("p2", T0)
    object.__setattr__(bad.allocation, "cpu_millis", events.MAX_CPU_MILLIS + 1)  # unchecked
    writer = LedgerWriter(dsn)
    for event in (start("p1", T0), bad, start("p3", T0)):
        writer.submit(event)
    await writer.flush()
    assert (writer.pending, writer.written, writer.refused) == (0, 2, 1)
    await writer.close()


def running_pod(**status) -> dict:
    return {
        "metadata": {
            "uid": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "annotations": {"hub.jupyter.org/username": "alice"},
        },
        "spec": {"containers": [{"resources": {"requests": {"cpu": "2"}}}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-12-05T08:00:00Z",
                }
            ],
            **status,
        },
    }


async def test_a_pod_seen_again_after_a_hub_restart_counts_once_to_the_second(dsn: str):
    def seen(obj: dict) -> list[AllocationEvent]:
        read = events.pod_allocation(obj, model="a100", units=1, kind="notebook")
        return events.pod_events(read, obj)

    before = LedgerWriter(dsn)
    for event in seen(running_pod()):
        before.submit(event)
    await before.close()
    after = LedgerWriter(dsn)  # the hub restarted: its relist sees the pod again, then its end
    terminated = {"terminated": {"finishedAt": "2026-12-05T10:30:07Z"}}
    finished = {"containerStatuses": [{"state": terminated}]}
    for event in seen(running_pod()) + seen(running_pod(phase="Succeeded", **finished)):
        after.submit(event)
    await after.close()
    assert (before.written, after.written) == (1, 1)
    [usage] = await read_usage(dsn)
    assert (usage.unit_seconds, usage.cpu_hours) == (9007, Fraction(2 * 9007, 3600))
