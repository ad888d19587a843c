"""The accounting tests' fixtures: the pytest process's real PostgreSQL (tests/postgres.py),
a fresh database per module, and that database migrated to head (`ledger_db`)."""

import pytest

from tests.postgres import Postgres, database, postgres  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def ledger_db(postgres: Postgres, database: str) -> str:  # noqa: F811
    """The module's database with the ledger's schema at head; its libpq connection string."""
    from aiinfn_hub.accounting import ledger

    ledger.upgrade(postgres.url(database))
    return postgres.dsn(database)
