"""The ledger read for the usage service: use per UTC day, in one parameterised statement.

The same intervals as `ledger.usage` (a start and its end; one still open counts up to `now`),
each cut at the days' boundaries, which are passed in as two arrays, so the days are exactly the
UTC days the request asked for whatever the session's time zone. Units x seconds and millicores
x seconds stay exact integers. At most `limit` rows: a query past it is refused, not cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from psycopg import AsyncConnection

from ...errors import UserError
from .query import UsageQuery

_DAILY = """
WITH days AS (
    SELECT * FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[])
        AS d(day_start, day_end)
),
intervals AS (
    SELECT s.user_name, s.project, s.model, s.kind, s.site, s.units, s.cpu_millis,
           s.at AS started, COALESCE(e.at, %(now)s) AS ended
    FROM accounting_events s
    LEFT JOIN accounting_events e ON e.allocation = s.allocation AND e.phase = 'end'
    WHERE s.phase = 'start' AND s.at < %(until)s AND COALESCE(e.at, %(now)s) > %(since)s
      AND (%(user)s::text IS NULL OR s.user_name = %(user)s)
      AND (%(project)s::text IS NULL OR s.project = %(project)s)
),
parts AS (
    SELECT d.day_start, i.user_name, i.project, i.model, i.kind, i.site, i.units, i.cpu_millis,
           GREATEST(i.started, d.day_start) AS part_start, LEAST(i.ended, d.day_end) AS part_end
    FROM intervals i JOIN days d ON i.started < d.day_end AND i.ended > d.day_start
)
SELECT (day_start AT TIME ZONE 'UTC')::date, user_name, project, model, kind, site,
       SUM(units * EXTRACT(EPOCH FROM part_end - part_start))::bigint,
       SUM(cpu_millis * EXTRACT(EPOCH FROM part_end - part_start))::bigint
FROM parts WHERE part_end > part_start
GROUP BY day_start, user_name, project, model, kind, site
ORDER BY day_start, user_name, project, model, kind, site
LIMIT %(limit)s
"""

_NAMES = """
SELECT DISTINCT user_name FROM accounting_events WHERE phase = 'start'
ORDER BY user_name LIMIT %(limit)s
"""

_PROJECTS = """
SELECT DISTINCT project FROM accounting_events WHERE phase = 'start' AND project <> ''
ORDER BY project LIMIT %(limit)s
"""


@dataclass(frozen=True)
class DailyUse:
    """One (day, user, project, model, kind, site): accelerator unit-seconds and millicore-seconds
    of that UTC day. `model` "" is CPU-only work; `site` "" is local."""

    day: date
    user: str
    project: str
    model: str
    kind: str
    site: str
    unit_seconds: int
    cpu_millisecond_seconds: int


class TooMany(UserError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"more than {limit} rows; narrow the range, or pick a user or a project",
            reason="too-large",
            status=400,
        )


def day_bounds(query: UsageQuery) -> tuple[list[datetime], list[datetime]]:
    """The start and end of each UTC day of the query."""
    starts = [query.since + timedelta(days=n) for n in range(len(query.days()))]
    return starts, [start + timedelta(days=1) for start in starts]


async def daily(
    connection: AsyncConnection, query: UsageQuery, now: datetime, limit: int
) -> list[DailyUse]:
    """Use per UTC day of the query (its user, or everyone's; its project), open intervals up to
    `now` (a whole second). More than `limit` rows: TooMany."""
    starts, ends = day_bounds(query)
    params = {
        "starts": starts,
        "ends": ends,
        "since": query.since,
        "until": query.until,
        "now": now.replace(microsecond=0),
        "user": query.user,
        "project": query.project,
        "limit": limit + 1,
    }
    async with connection.cursor() as cursor:
        await cursor.execute(_DAILY, params)
        rows = await cursor.fetchall()
    if len(rows) > limit:
        raise TooMany(limit)
    return [DailyUse(*row) for row in rows]


async def names(connection: AsyncConnection, limit: int) -> tuple[list[str], list[str]]:
    """The users and the projects the ledger knows (an admin's choices), at most `limit` each."""
    async with connection.cursor() as cursor:
        await cursor.execute(_NAMES, {"limit": limit})
        users = [row[0] for row in await cursor.fetchall()]
        await cursor.execute(_PROJECTS, {"limit": limit})
        projects = [row[0] for row in await cursor.fetchall()]
    return users, projects
