"""The accounting ledger in PostgreSQL: events stored once, usage computed to the second.

One table (migrations/versions/0001_events.py): a row per allocation start or end, its primary
key the event's deterministic id, so inserting a replayed event does nothing. An interval is a
start and, once it came, its end; usage over a period sums units x seconds and millicores x
seconds of the intervals' parts inside it, an interval still open counting up to `now`. Times
are whole seconds, so the sums are exact integers (hours are Fractions of them). Every
statement is parameterised; events are checked (events.py) before they get here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

from alembic import command
from alembic.config import Config
from psycopg import AsyncConnection

from .events import Allocation, AllocationEvent, InvalidEvent

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_INSERT = """
INSERT INTO accounting_events
    (event_id, allocation, phase, at, user_name, project, model, kind, site, units, cpu_millis)
SELECT * FROM unnest(
    %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[],
    %s::text[], %s::text[], %s::text[], %s::int[], %s::int[])
ON CONFLICT (event_id) DO NOTHING
"""

_USAGE = """
WITH parts AS (
    SELECT s.user_name, s.project, s.model, s.kind, s.site, s.units, s.cpu_millis,
           GREATEST(s.at, %(since)s) AS part_start,
           LEAST(COALESCE(e.at, %(now)s), %(until)s) AS part_end
    FROM accounting_events s
    LEFT JOIN accounting_events e ON e.allocation = s.allocation AND e.phase = 'end'
    WHERE s.phase = 'start' AND s.at < %(until)s
      AND (%(user)s::text IS NULL OR s.user_name = %(user)s)
      AND (%(project)s::text IS NULL OR s.project = %(project)s)
)
SELECT user_name, project, model, kind, site,
       SUM(units * EXTRACT(EPOCH FROM part_end - part_start))::bigint,
       SUM(cpu_millis * EXTRACT(EPOCH FROM part_end - part_start))::bigint
FROM parts WHERE part_end > part_start
GROUP BY user_name, project, model, kind, site
ORDER BY user_name, project, model, kind, site
"""

_OPEN = """
SELECT s.allocation FROM accounting_events s
WHERE s.phase = 'start' AND NOT EXISTS (
    SELECT 1 FROM accounting_events e WHERE e.allocation = s.allocation AND e.phase = 'end')
ORDER BY s.allocation
"""

_OPEN_STARTS = """
SELECT s.allocation, s.user_name, s.project, s.model, s.kind, s.site, s.units, s.cpu_millis,
       s.at
FROM accounting_events s
WHERE s.phase = 'start' AND NOT EXISTS (
    SELECT 1 FROM accounting_events e WHERE e.allocation = s.allocation AND e.phase = 'end')
ORDER BY s.allocation
"""


@dataclass(frozen=True)
class Usage:
    """Use by one (user, project, model, kind, site) over a period, in exact unit-seconds and
    millicore-seconds. `model` "" is CPU-only work."""

    user: str
    project: str
    model: str
    kind: str
    site: str
    unit_seconds: int
    cpu_millisecond_seconds: int

    @property
    def unit_hours(self) -> Fraction:
        """Accelerator unit-hours (GPU-hours for a GPU model), exact."""
        return Fraction(self.unit_seconds, 3600)

    @property
    def cpu_hours(self) -> Fraction:
        """Core-hours of the CPUs requested, exact."""
        return Fraction(self.cpu_millisecond_seconds, 3_600_000)


def alembic_config(url: str) -> Config:
    """Alembic's config for a database (an SQLAlchemy URL, driver postgresql+psycopg)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the ledger's schema (from empty, or from any earlier revision)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the ledger's schema back to `revision` ("base": no table left)."""
    command.downgrade(alembic_config(url), revision)


async def insert(connection: AsyncConnection, events: Sequence[AllocationEvent]) -> int:
    """Store events in one statement, each id once; how many were new. The caller commits."""
    if not events:
        return 0
    rows = [
        (e.event_id, a.allocation, e.phase, e.at, a.user, a.project, a.model)
        + (a.kind, a.site, a.units, a.cpu_millis)
        for e in events
        for a in (e.allocation,)
    ]
    columns = [list(column) for column in zip(*rows, strict=True)]
    async with connection.cursor() as cursor:
        await cursor.execute(_INSERT, columns)
        return cursor.rowcount


def _second(value: datetime, name: str) -> datetime:
    if value.utcoffset() is None or value.microsecond:
        raise InvalidEvent(f"{name} must be a whole second with a time zone")
    return value


async def usage(
    connection: AsyncConnection,
    since: datetime,
    until: datetime,
    now: datetime,
    *,
    user: str | None = None,
    project: str | None = None,
) -> list[Usage]:
    """Use over [since, until), intervals still open counted up to `now`; optionally for one
    user or project. Times are whole seconds with a time zone."""
    params = {
        "since": _second(since, "since"),
        "until": _second(until, "until"),
        "now": _second(now, "now"),
        "user": user,
        "project": project,
    }
    async with connection.cursor() as cursor:
        await cursor.execute(_USAGE, params)
        return [Usage(*row) for row in await cursor.fetchall()]


async def open_allocations(connection: AsyncConnection) -> list[str]:
    """Allocations started and not ended: after a relist, those whose pod is gone need an end."""
    async with connection.cursor() as cursor:
        await cursor.execute(_OPEN)
        return [row[0] for row in await cursor.fetchall()]


async def open_starts(connection: AsyncConnection) -> list[AllocationEvent]:
    """The start events of the allocations not ended (what an end for each would repeat)."""
    async with connection.cursor() as cursor:
        await cursor.execute(_OPEN_STARTS)
        rows = await cursor.fetchall()
    return [AllocationEvent(Allocation(*row[:8]), "start", row[8]) for row in rows]
