"""`c.AiInfnAccounting.*`: the ledger's database, for the hub process only (opt-in).

Unset, accounting is off and nothing of it is imported (no psycopg at hub start). The URL holds
a password: it comes from the hub's environment (a Secret), is never logged, never put in an
error message, and never given to the services or the notebook pods (their environments are
built from allowlists, 40-jobs.py and the spawner).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from traitlets import Integer, TraitError, Unicode, default, validate
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
