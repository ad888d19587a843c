"""HTTP side of the usage service: the REST API under api/ (JSON and CSV), the page, health.

Every handler takes the caller from the hub (a token, or the page's OAuth cookie) and hands the
query string to the operation, which checks every parameter before the database is asked. A
database that cannot answer is a 503 (its error's class in the log, never its message, which
may name the server); each user has a token bucket (429 with Retry-After).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import psycopg
from tornado import web

from ...errors import UserError
from .. import pages
from ..base import HubUser, OpenApiHandler, ServiceHandler
from ..cluster import HealthHandler, RateLimited
from . import chart, report
from .operations import Report, UsageService

UNAVAILABLE = "the usage records cannot be read right now; try again in a minute"


class _Usage(ServiceHandler):
    """Authenticated, rate-limited; the database's failures are 503s."""

    @property
    def usage(self) -> UsageService:
        return self.settings["usage"]

    def user(self) -> HubUser:
        caller = self.caller()
        wait = self.settings["limiter"].take(caller.name)
        if wait:
            raise RateLimited(wait)
        return caller

    def as_user_error(self, error: BaseException | None) -> UserError | None:
        if isinstance(error, psycopg.Error):
            return UserError(
                UNAVAILABLE,
                reason="unavailable",
                log_detail=f"accounting database: {type(error).__name__}",
                status=503,
            )
        return super().as_user_error(error)

    def write_csv(self, found: Report) -> None:
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header(
            "Content-Disposition",
            f'attachment; filename="{report.csv_filename(found.query)}"',
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(report.csv_text(found.rows))


class ApiRootHandler(_Usage):
    async def get(self) -> None:
        caller = self.user()
        self.write_api_root("aiinfn-usage", caller, admin=self.usage.is_admin(caller))


class UsageHandler(_Usage):
    """GET api/usage: JSON, or CSV with format=csv."""

    async def get(self) -> None:
        found = await self.usage.report(self.user(), self.request.query_arguments)
        if found.query.format == "csv":
            self.write_csv(found)
            return
        self.write_json(report.document(found.query, found.rows, found.standings, found.now))


class UsageCsvHandler(_Usage):
    """GET api/usage.csv: the daily rows as a CSV download."""

    async def get(self) -> None:
        self.write_csv(await self.usage.report(self.user(), self.request.query_arguments, "csv"))


class PageHandler(_Usage):
    """The usage page (the hub's look): plots, tables, quotas left; an admin's selector."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = self.as_user_error(kwargs.get("exc_info", (None, None, None))[1])
        status = error.status if error is not None else status_code
        message = (
            error.message
            if error is not None
            else "something went wrong; the service log has the details"
        )
        pages.finish_error_page(self, status, message, "Usage")

    @web.authenticated
    async def get(self) -> None:
        caller = self.user()
        found = await self.usage.report(caller, self.request.query_arguments)
        users, projects = await self.usage.choices() if found.admin else ([], [])
        days = found.query.days()
        pages.finish_page(
            self,
            "usage.html",
            title="Usage",
            caller=caller.name,
            report=found,
            document=report.document(found.query, found.rows, found.standings, found.now),
            charts=[chart.accelerator_chart(days, found.rows), chart.cpu_chart(days, found.rows)],
            users=users,
            projects=projects,
            csv_link=self.settings["service_prefix"] + "api/usage.csv?" + csv_query(found),
            api=self.settings["service_prefix"] + "api/",
        )


def csv_query(found: Report) -> str:
    """The page's query, checked, for its CSV link."""
    query = found.query
    asked = {"start": query.first.isoformat(), "end": query.last.isoformat()}
    if query.every_user:
        asked["all"] = "1"
    elif query.user is not None:
        asked["user"] = query.user
    if query.project is not None:
        asked["project"] = query.project
    return urlencode(asked)


def routes() -> list[tuple]:
    return [
        (r"api/?", ApiRootHandler),
        (r"api/openapi\.json", OpenApiHandler),
        (r"api/usage\.csv", UsageCsvHandler),
        (r"api/usage/?", UsageHandler),
        (r"?", PageHandler),
        (r"health", HealthHandler),
    ]
