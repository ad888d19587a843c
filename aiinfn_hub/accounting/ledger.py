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

# Accelerator unit-seconds by model for each window (a user or a project, counted from `since`
# up to now), all windows in one statement: what a quota check reads.
_WINDOWS = """
WITH windows AS (
    SELECT * FROM unnest(%(users)s::text[], %(projects)s::text[], %(since)s::timestamptz[])
        WITH ORDINALITY AS w(user_name, project, since, id)
)
SELECT id, model, SUM(units * EXTRACT(EPOCH FROM part_end - part_start))::bigint
FROM (
    SELECT w.id, s.model, s.units, GREATEST(s.at, w.since) AS part_start,
           LEAST(COALESCE(e.at, %(now)s), %(now)s) AS part_end
    FROM windows w
    JOIN accounting_events s ON s.phase = 'start' AND s.units > 0 AND s.at < %(now)s
        AND (w.user_name IS NULL OR s.user_name = w.user_name)
        AND (w.project IS NULL OR s.project = w.project)
    LEFT JOIN accounting_events e ON e.allocation = s.allocation AND e.phase = 'end'
) parts
WHERE part_end > part_start
GROUP BY id, model
"""

_ADJUSTMENTS = """
SELECT a.scope, a.subject, a.model, a.period, a.period_start, a.extra_hours, a.reset_at
FROM quota_adjustments a
JOIN unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
    AS k(scope, subject, model, period, period_start)
    ON (a.scope, a.subject, a.model, a.period, a.period_start)
     = (k.scope, k.subject, k.model, k.period, k.period_start)
"""

_ADJUST = """
INSERT INTO quota_adjustments AS a
    (scope, subject, model, period, period_start, extra_hours, reset_at, changed_by)
VALUES (%(scope)s, %(subject)s, %(model)s, %(period)s, %(period_start)s, %(extra_hours)s,
        %(reset_at)s, %(by)s)
ON CONFLICT (scope, subject, model, period, period_start) DO UPDATE SET
    extra_hours = a.extra_hours + EXCLUDED.extra_hours,
    reset_at = COALESCE(EXCLUDED.reset_at, a.reset_at),
    changed_by = EXCLUDED.changed_by,
    changed_at = now()
"""

AdjustmentKey = tuple[str, str, str, str, datetime]


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


async def window_unit_seconds(
    connection: AsyncConnection,
    windows: Sequence[tuple[str | None, str | None, datetime]],
    now: datetime,
) -> list[dict[str, int]]:
    """For each window (user or None, project or None, since): accelerator unit-seconds by
    model from `since` up to `now`, intervals still open counted up to `now`. One statement."""
    found: list[dict[str, int]] = [{} for _ in windows]
    if not windows:
        return found
    users, projects, since = (list(column) for column in zip(*windows, strict=True))
    params = {
        "users": users,
        "projects": projects,
        "since": [_second(s.replace(microsecond=0), "since") for s in since],
        "now": _second(now, "now"),
    }
    async with connection.cursor() as cursor:
        await cursor.execute(_WINDOWS, params)
        for index, model, seconds in await cursor.fetchall():
            found[index - 1][model] = seconds
    return found


async def quota_adjustments(
    connection: AsyncConnection, keys: Sequence[AdjustmentKey]
) -> dict[AdjustmentKey, tuple[float, datetime | None]]:
    """The admins' adjustments of these (scope, subject, model, period, period_start):
    (extra hours, reset time or None) for each that has one."""
    if not keys:
        return {}
    columns = [list(column) for column in zip(*keys, strict=True)]
    async with connection.cursor() as cursor:
        await cursor.execute(_ADJUSTMENTS, columns)
        rows = await cursor.fetchall()
    return {(r[0], r[1], r[2], r[3], r[4]): (r[5], r[6]) for r in rows}


async def adjust_quota(
    connection: AsyncConnection,
    key: AdjustmentKey,
    *,
    by: str,
    extra_hours: float = 0.0,
    reset_at: datetime | None = None,
) -> None:
    """Add hours to a subject's period, or restart its count at `reset_at`; the caller
    commits. `by` names the admin (kept with the row)."""
    scope, subject, model, period, period_start = key
    params = {
        "scope": scope,
        "subject": subject,
        "model": model,
        "period": period,
        "period_start": period_start,
        "extra_hours": extra_hours,
        "reset_at": reset_at,
        "by": by,
    }
    async with connection.cursor() as cursor:
        await cursor.execute(_ADJUST, params)
