"""The ledger's Alembic migrations (a package so that the hub image installs them)."""
