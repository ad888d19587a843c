"""A real PostgreSQL (Debian's postgresql-15) for the tests, on the loopback.

The server itself is aiinfn_dev.postgres (shared with the demo and the benchmark): `initdb`
into a fresh folder under /tmp (handed to `nobody` when the tests run as root: pytest's own
tmp folders are root's, mode 0700), `postgres` on a free port of 127.0.0.1 only, stopped by
pid and its folder removed. One server per pytest process (the `postgres` fixture,
session-scoped); `database` gives each test module a fresh database. A test may start a
server of its own (`start`) to stop and restart it. Where PostgreSQL cannot run, the tests
that need it skip, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiinfn_dev.postgres import Postgres, Unavailable, create_database, remove, start, stop
from aiinfn_dev.postgres import initdb as _initdb

__all__ = ["Postgres", "create_database", "database", "initdb", "postgres", "remove"]
__all__ += ["start", "stop"]


def initdb() -> Postgres:
    """A new cluster in a fresh folder under /tmp; the test skips where none can run."""
    try:
        return _initdb()
    except Unavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The pytest process's PostgreSQL (each xdist worker has its own)."""
    server = initdb()
    try:
        yield start(server)
    finally:
        remove(server)


@pytest.fixture(scope="module")
def database(postgres) -> str:
    """A fresh database for the test module (its name)."""
    return create_database(postgres)
