"""GPU-hour and CPU-hour accounting (issue 15, docs/accounting.md).

events.py: allocation events, pure and validated, read from the pods the inventory watch sees;
ledger.py: the PostgreSQL ledger (idempotent inserts, usage to the second) and its Alembic
migrations (migrations/); writer.py: the buffered writer that outlives a database outage.
"""
