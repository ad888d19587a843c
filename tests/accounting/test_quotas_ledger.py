"""Quota standings against a real PostgreSQL: usage to the second, open work counted up to now,
periods clipped, the admins' extra hours and resets."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub.accounting import ledger
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.quota_gate import UNAVAILABLE, QuotaGate
from aiinfn_hub.accounting.quotas import QuotaStanding, parse_quotas, period_bounds, standings
from aiinfn_hub.errors import UserError

SECRET = "s3cr%40t"
NOW = datetime(2026, 12, 17, 15, 0, 0, tzinfo=UTC)  # a Thursday
MONTH = datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
WEEK = datetime(2026, 12, 14, tzinfo=UTC), datetime(2026, 12, 21, tzinfo=UTC)
QUOTAS = parse_quotas(
    {
        "cms-a100": {"scope": "project", "subject": "cms", "model": "a100", "period": "month",
                     "hours": 500},
        "users-weekly": {"scope": "user", "period": "week", "hours": 50},
    }
)  # fmt: skip


def event(uid: str, phase: str, at: datetime, **fields) -> AllocationEvent:
    values = {"user": "alice", "project": "cms", "model": "a100", "kind": "batch", "site": ""}
    values |= {"units": 2, "cpu_millis": 1000}
    return AllocationEvent(Allocation(allocation=uid, **{**values, **fields}), phase, at)


@pytest.fixture
async def connection(ledger_db: str):
    async with await AsyncConnection.connect(ledger_db) as connection:
        await connection.execute("DELETE FROM accounting_events")
        await connection.execute("DELETE FROM quota_adjustments")
        await connection.commit()
        yield connection


async def test_standings_count_closed_and_open_intervals_to_the_second(connection):
    hour = timedelta(hours=1)
    await ledger.insert(
        connection,
        [
            # Last month, then across the month's start: only December's part counts.
            event("a-1", "start", MONTH[0] - 10 * hour),
            event("a-1", "end", MONTH[0] - 5 * hour),
            event("a-2", "start", MONTH[0] - hour),
            event("a-2", "end", MONTH[0] + hour + timedelta(seconds=7)),
            # Still running: counts up to now (2 units x 3 h).
            event("a-3", "start", NOW - 3 * hour),
            # bob's T4 notebook in no project: only bob's quota.
            event("b-1", "start", NOW - hour, user="bob", project="", model="t4", units=1),
            event("b-1", "end", NOW - timedelta(minutes=30), user="bob", project="", model="t4",
                  units=1),
            # CPU-only work and another project's A100s: no A100-hours of cms.
            event("c-1", "start", WEEK[0], model="", units=0),
            event("c-2", "start", WEEK[0], project="lhcb"),
        ],
    )  # fmt: skip
    await connection.commit()
    got = await standings(connection, QUOTAS, "alice", ["cms"], NOW)
    cms_seconds = 2 * (3600 + 7) + 2 * 3 * 3600
    alice_seconds = 2 * 3 * 3600 + 2 * (NOW - WEEK[0]).total_seconds()  # a-3 and c-2
    assert got == [
        QuotaStanding("user", "alice", None, "week", *WEEK, 50.0, alice_seconds / 3600),
        QuotaStanding("project", "cms", "a100", "month", *MONTH, 500.0, cms_seconds / 3600),
    ]
    (bob,) = await standings(connection, QUOTAS, "bob", [], NOW)
    assert bob.used_hours == 0.5
    assert await standings(connection, (), "alice", ["cms"], NOW) == []


async def test_admins_extra_hours_and_reset_apply_to_the_current_period_only(connection):
    await ledger.insert(connection, [event("a-1", "start", NOW - timedelta(hours=30))])
    key = ("user", "alice", "", "week", WEEK[0])
    await ledger.adjust_quota(connection, key, by="admin", extra_hours=10.0)
    await ledger.adjust_quota(connection, key, by="admin", extra_hours=5.5)
    # Last week's adjustment changes nothing now.
    old = ("user", "alice", "", "week", WEEK[0] - timedelta(days=7))
    await ledger.adjust_quota(connection, old, by="admin", extra_hours=1000.0)
    await connection.commit()
    (alice,) = await standings(connection, QUOTAS, "alice", [], NOW)
    assert (alice.limit_hours, alice.used_hours) == (65.5, 60.0)
    assert alice.remaining_hours == 5.5

    reset = NOW - timedelta(hours=2)
    await ledger.adjust_quota(connection, key, by="admin", reset_at=reset)
    await connection.commit()
    (alice,) = await standings(connection, QUOTAS, "alice", [], NOW)
    assert (alice.limit_hours, alice.used_hours) == (65.5, 4.0)  # 2 units x 2 h since reset
    # Another raise keeps the reset.
    await ledger.adjust_quota(connection, key, by="admin", extra_hours=1.0)
    await connection.commit()
    (alice,) = await standings(connection, QUOTAS, "alice", [], NOW)
    assert (alice.limit_hours, alice.used_hours) == (66.5, 4.0)


async def test_the_gate_refuses_with_the_figures_and_lets_through_what_has_hours_left(
    ledger_db: str, connection
):
    hour = timedelta(hours=1)
    now = datetime.now(UTC).replace(microsecond=0)
    # alice has run 2 A100s for 26 hours this month (up to now: still running), but the
    # period may have begun less than 26 hours ago: the quota is set to what she used.
    await ledger.insert(connection, [event("a-1", "start", now - 26 * hour)])
    await connection.commit()
    start = period_bounds("month", now)[0]
    used = 2 * (now - max(start, now - 26 * hour)).total_seconds() / 3600
    quotas = parse_quotas(
        {"cms": {"scope": "project", "subject": "cms", "model": "a100", "period": "month",
                 "hours": used}}
    )  # fmt: skip
    gate = QuotaGate(quotas, ledger_db, {"a100": "NVIDIA A100"})
    with pytest.raises(UserError) as refused:
        await gate.check("alice", "a100", "cms")
    assert refused.value.status == 403 and refused.value.reason == "quota"
    shown = math.floor(used * 10) / 10
    assert refused.value.message.startswith(f"project cms has used {shown:.1f} of its {used:g} ")
    assert "hours of NVIDIA A100 this month (resets " in refused.value.message
    await gate.check("alice", "t4", "cms")  # another model
    await gate.check("alice", "a100", "lhcb")  # another project
    await gate.check("alice", "a100")  # a notebook server: no project
    await gate.check("alice", "", "cms")  # CPU only


async def test_a_database_that_does_not_answer_lets_work_through(caplog):
    from aiinfn_dev.devcluster.processes import free_port

    dsn = f"postgresql://nobody:{SECRET}@127.0.0.1:{free_port()}/none"
    quotas = parse_quotas({"w": {"scope": "user", "period": "week", "hours": 0}})
    gate = QuotaGate(quotas, dsn, {}, timeout=2.0)
    assert await gate.standings("alice", []) is None
    await gate.check("alice", "a100")  # let through, without asking the database again
    assert caplog.text.count("the accounting database did not answer (OperationalError)") == 1
    assert SECRET not in caplog.text
    assert gate.notes(None, "alice", "a100") == [{"text": UNAVAILABLE, "exhausted": False}]
    assert gate.notes(None, "alice", "") == []
