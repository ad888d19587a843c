"""The usage service's one operation, for one caller: read the request, decide whose usage it
may see, read the ledger and the quotas that apply. The handlers only format the answer.

Quotas shown: for one user, those on the user and on each project the user is in (the caller's
projects come from their groups; for another user an admin views, the projects of that user's
usage in the range, and the project asked for); for everyone's usage, the quotas of the
projects of that usage (or of the project asked for), no user's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..base import HubUser
from . import query as queries
from . import store
from .query import UsageQuery
from .store import DailyUse

Connect = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class UsageSettings:
    max_days: int
    max_rows: int
    admin_groups: frozenset[str]
    quotas: Sequence[Any]  # accounting.quotas.Quota
    projects_of: Callable[[Collection[str]], list[str]]  # a user's groups -> catalog projects
    projects: tuple[str, ...] = ()  # the catalog's


@dataclass(frozen=True)
class Report:
    query: UsageQuery
    rows: list[DailyUse]
    standings: list[Any]  # accounting.quotas.QuotaStanding
    now: datetime
    admin: bool


class UsageService:
    """The ledger, read for callers the hub identified (connect: a new psycopg connection)."""

    def __init__(self, connect: Connect, settings: UsageSettings) -> None:
        self.connect = connect
        self.settings = settings

    def is_admin(self, caller: HubUser) -> bool:
        return queries.is_admin(caller, self.settings.admin_groups)

    def decide(self, caller: HubUser, arguments: Any, format: str, now: datetime) -> UsageQuery:
        """The request's query, checked and authorised (400, 403), before any database work."""
        asked = queries.parse(arguments, now.date(), self.settings.max_days, format)
        return queries.authorise(asked, caller, self.is_admin(caller))

    async def report(self, caller: HubUser, arguments: Any, format: str = "json") -> Report:
        now = datetime.now(UTC).replace(microsecond=0)
        query = self.decide(caller, arguments, format, now)
        async with await self.connect() as connection:
            rows = await store.daily(connection, query, now, self.settings.max_rows)
            standings = await self._standings(connection, caller, query, rows, now)
        return Report(query, rows, standings, now, self.is_admin(caller))

    async def choices(self, limit: int = 5000) -> tuple[list[str], list[str]]:
        """Every user of the ledger, every project of the catalog and the ledger (an admin's
        selector)."""
        async with await self.connect() as connection:
            users, projects = await store.names(connection, limit)
        return users, sorted({*projects, *self.settings.projects})

    async def ping(self) -> None:
        """One round trip: the health check."""
        async with await self.connect() as connection:
            await connection.execute("SELECT 1")

    async def _standings(
        self,
        connection: Any,
        caller: HubUser,
        query: UsageQuery,
        rows: Sequence[DailyUse],
        now: datetime,
    ) -> list[Any]:
        if not self.settings.quotas:
            return []
        from ...accounting import quotas

        if query.user == caller.name:
            projects = self.settings.projects_of(caller.groups)
        else:  # an admin's view
            projects = sorted({row.project for row in rows if row.project} | {query.project or ""})
        if query.project is not None:
            projects = [p for p in projects if p == query.project]
        projects = [p for p in projects if p]
        found = await quotas.standings(
            connection, self.settings.quotas, query.user or "", projects, now
        )
        return [s for s in found if query.user is not None or s.scope == "project"]
