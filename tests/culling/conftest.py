"""The culling tests' fixtures: the pytest process's PostgreSQL (tests/postgres.py), for the
accounting ledger of the culling hub where psycopg is installed."""

from tests.postgres import postgres  # noqa: F401 (the session's PostgreSQL fixture)
