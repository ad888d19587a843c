"""The accounting tests' fixtures: the pytest process's real PostgreSQL (tests/postgres.py),
a fresh database per module, and that database migrated to head (`ledger_db`); `until`."""

from collections.abc import Callable

import pytest

from tests.helpers import wait_until
from tests.postgres import Postgres, database, postgres  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def ledger_db(postgres: Postgres, database: str) -> str:  # noqa: F811
    """The module's database with the ledger's schema at head; its libpq connection string."""
    from aiinfn_hub.accounting import ledger

    ledger.upgrade(postgres.url(database))
    return postgres.dsn(database)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until a plain condition holds (the writer's counters), failing after the limit."""

    async def check() -> bool:
        return condition()

    await wait_until(check, what)
