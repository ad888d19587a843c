"""`c.AiInfnAccounting.*`: the ledger's database, for the hub process only (opt-in).

Unset, accounting is off and nothing of it is imported (no psycopg at hub start). The URL holds
a password: it comes from the hub's environment (a Secret), is never logged, never put in an
error message, never given to the notebook pods (the spawner sets their environment), and given
to one service only, the job service, which reads the ledger for quotas (40-jobs.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from traitlets import Dict, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Configurable

URL_ENV = "AIINFN_ACCOUNTING_DATABASE_URL"
SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


class AiInfnAccounting(Configurable):
    """GPU-hour and CPU-hour accounting in PostgreSQL (docs/accounting.md); off when unset."""

    database_url = Unicode(
        config=True,
        help=f"""The ledger's PostgreSQL database, as a URL:
        postgresql://USER:PASSWORD@HOST:5432/DATABASE (percent-encode special characters).
        Default: the hub's environment variable {URL_ENV} (set it from a Secret). Empty:
        accounting off. At hub start the hub migrates the ledger's schema (Alembic), then
        records the start and end of every allocation its inventory watch sees.""",
    )
    queue_limit = Integer(
        100_000,
        min=1,
        config=True,
        help="""Events kept in memory while the database is unreachable (about 400 bytes each);
        past it new events are dropped and counted (the next relist recovers running pods).""",
    )

    quotas = Dict(
        key_trait=Unicode(),
        config=True,
        help="""Quotas on accelerator hours (docs/accounting.md, "Quotas"), keyed by a name of
        your choice: {"cms-a100": {"scope": "project", "subject": "cms-ml", "model": "a100",
        "period": "month", "hours": 500}, "users-weekly": {"scope": "user", "period": "week",
        "hours": 50}}. `scope`: project or user; `subject`: the project's catalog key or the
        user's name, or "*" (the default) for each project or user on its own (a quota naming
        a subject replaces the "*" one of the same model and period for it); `model`: an
        accelerator's catalog key (absent: unit-hours of every accelerator, i.e. GPU-hours);
        `period`: day, week (from Monday) or month, calendar periods in UTC; `hours`: the
        limit. A new server or job on an accelerator is refused once a quota that applies to
        it has no hours left; work already running is never stopped. Needs database_url.
        Empty (the default): no quota, and no database query at spawn or submission.""",
    )
    quota_timeout = Float(
        3.0,
        min=0.1,
        max=30.0,
        config=True,
        help="""Seconds a quota check may wait for the database (connecting and reading). A
        database that does not answer in time lets the work through (logged): quotas never
        stop the platform when accounting is down.""",
    )

    @default("database_url")
    def _default_database_url(self) -> str:
        return os.environ.get(URL_ENV, "")

    @validate("database_url")
    def _validate_database_url(self, proposal: dict) -> str:
        value = proposal["value"].strip()
        if value and not _readable(value):
            # Never the value itself: it holds a password.
            raise TraitError(
                "AiInfnAccounting.database_url must be a URL postgresql://USER:PASSWORD@HOST"
                ":PORT/DATABASE"
            )
        return value

    @validate("quotas")
    def _validate_quotas(self, proposal: dict) -> dict:
        value = proposal["value"]
        if not value:
            return value
        from .quotas import check_catalog, parse_quotas

        try:
            parsed = parse_quotas(value)
            catalog = _catalog(self.config)
            if catalog is not None:
                kinds = {key: a.kind for key, a in catalog.accelerators.items()}
                check_catalog(parsed, kinds, list(catalog.projects))
        except ValueError as error:
            raise TraitError(f"AiInfnAccounting.quotas: {error}") from None
        if not self.database_url:  # under the configuration's load, database_url is set first
            raise TraitError(
                "AiInfnAccounting.quotas need accounting: set AiInfnAccounting.database_url "
                f"(or the hub's environment variable {URL_ENV})"
            )
        return value


def service_environment() -> dict[str, str]:
    """What the job service's environment takes from the hub's for quotas at submission: the
    ledger's URL when the hub's environment has it (the service reads the same configuration,
    where c.AiInfnAccounting.database_url defaults to it). Nothing else of accounting."""
    url = os.environ.get(URL_ENV)
    return {URL_ENV: url} if url else {}


def _catalog(config: Any) -> Any:
    """The configured catalog, or None when it cannot be read (the platform's own start check
    reports that, naming the problem)."""
    from ..catalog import CatalogError, load
    from ..platform_config import AiInfnPlatform

    try:
        return load(Path(AiInfnPlatform(config=config).catalog_file))
    except (CatalogError, OSError):
        return None


def _readable(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in SCHEMES and bool(parts.hostname) and len(parts.path) > 1


def sqlalchemy_url(url: str) -> str:
    """The URL with SQLAlchemy's psycopg 3 driver (Alembic)."""
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def libpq_url(url: str) -> str:
    """The URL as libpq reads it (psycopg.connect)."""
    return "postgresql://" + url.split("://", 1)[1]
