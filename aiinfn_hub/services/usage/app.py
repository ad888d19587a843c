"""AiInfnUsage: the usage service process (`python -m aiinfn_hub.services.usage`).

It reads the hub's configuration file, like the other services: the catalog (which projects a
user's groups make them a member of) is `c.AiInfnPlatform.*`, the ledger's database and the
quotas `c.AiInfnAccounting.*` (the URL from $AIINFN_ACCOUNTING_DATABASE_URL, which
jupyterhub_config.d/56-usage.py passes to this service alone), its own settings
`c.AiInfnUsage.*`. It needs no Kubernetes access and no hub scopes. It only reads: its
connections are read-only transactions with a statement timeout.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from typing import Any

import psycopg
from traitlets import Float, Int, List, TraitError, Unicode

from ... import hubstate
from ...accounting.settings import AiInfnAccounting, libpq_url
from ...catalog import Catalog, CatalogError
from ...platform_config import AiInfnPlatform
from ...policy import PolicyError
from ..base import ServiceApp
from ..cluster import HealthCheck
from ..ratelimit import RateLimiter
from . import handlers, openapi
from .operations import UsageService, UsageSettings


class AiInfnUsage(ServiceApp):
    """GPU-hours and CPU-hours from the accounting ledger: a page, a REST API and CSV."""

    name = "aiinfn-usage"
    description = "The aiinfn-hub usage service: your GPU-hours, CPU-hours and quotas left."

    max_range_days = Int(
        366,
        min=1,
        max=3660,
        config=True,
        help="The longest range of days a request may ask for (a longer one is a 400).",
    )
    max_rows = Int(
        100_000,
        min=1,
        config=True,
        help="""The most rows (day, user, project, model, kind, site) one answer may hold; a
        request past it is refused (400) with a hint to narrow it, never cut short.""",
    )
    admin_groups = List(
        Unicode(),
        config=True,
        help="""Hub groups whose members see every user's and project's usage and download it
        as CSV, like the hub's admins (e.g. ["accounting"]).""",
    )
    statement_timeout = Float(
        15.0,
        min=0.1,
        config=True,
        help="Seconds a query may run in the database before it is cancelled (the answer: 503).",
    )
    rate_limit = Float(
        2.0, min=0.001, config=True, help="Requests per second each user may make on average."
    )
    rate_limit_burst = Int(
        20, min=1, config=True, help="Requests a user may make at once before the rate applies."
    )

    def connector(self, url: str) -> Any:
        """A new read-only connection to the ledger per request (psycopg's async connect)."""
        options = (
            f"-c statement_timeout={int(self.statement_timeout * 1000)} "
            "-c default_transaction_read_only=on"
        )

        def connect() -> Any:
            return psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5, options=options
            )

        return connect

    def service(self) -> UsageService:
        """The operation, configured from the settings (a bad one stops the start)."""
        accounting = AiInfnAccounting(config=self.config)
        if not accounting.database_url:
            raise TraitError(
                "accounting is not configured (c.AiInfnAccounting.database_url, or "
                "$AIINFN_ACCOUNTING_DATABASE_URL): there is no usage to show"
            )
        try:
            catalog = hubstate.load(AiInfnPlatform(parent=self)).catalog
        except (CatalogError, PolicyError) as error:
            raise TraitError(f"invalid platform configuration: {error}") from None
        settings = UsageSettings(
            max_days=self.max_range_days,
            max_rows=self.max_rows,
            admin_groups=frozenset(self.admin_groups),
            quotas=configured_quotas(accounting),
            projects_of=lambda groups: project_keys(catalog, groups),
            projects=tuple(catalog.projects),
        )
        return UsageService(self.connector(libpq_url(accounting.database_url)), settings)

    async def setup(self) -> None:
        try:
            self.usage = self.service()
        except TraitError as error:
            raise SystemExit(f"{self.name}: {error}") from None
        self.limiter = RateLimiter(self.rate_limit, self.rate_limit_burst)
        self.health = DatabaseHealth(self.usage.ping)
        self.log.info(
            "%s: %d quotas, ranges up to %d days",
            self.name,
            len(self.usage.settings.quotas),
            self.max_range_days,
        )

    def handlers(self) -> list[tuple]:
        return handlers.routes()

    def tornado_settings(self) -> dict[str, Any]:
        return {
            "openapi": functools.partial(openapi.document, self.usage.settings.max_days),
            "usage": self.usage,
            "limiter": self.limiter,
            "health": self.health,
            "service_prefix": self.service_prefix.rstrip("/") + "/",
        }


class DatabaseHealth(HealthCheck):
    """/health: whether the ledger answers, asked at most every few seconds; a failure is
    logged by its class (its message may name the server)."""

    log = logging.getLogger(__name__)

    async def _check(self) -> bool:
        try:
            await self.probe()
        except Exception as error:
            self.log.warning("Health check: accounting database: %s", type(error).__name__)
            return False
        return True


def project_keys(catalog: Catalog, groups: Collection[str]) -> list[str]:
    return [project.key for project in catalog.projects_of(groups)]


def configured_quotas(accounting: AiInfnAccounting) -> tuple[Any, ...]:
    """c.AiInfnAccounting.quotas, parsed as the hub parses them; TraitError naming the quota."""
    if not accounting.quotas:
        return ()
    from ...accounting import quotas

    try:
        return quotas.parse_quotas(accounting.quotas)
    except ValueError as error:
        raise TraitError(f"AiInfnAccounting.quotas: {error}") from None


def main(argv: list[str] | None = None) -> None:
    app = AiInfnUsage.instance()
    app.initialize(argv)
    app.start()
