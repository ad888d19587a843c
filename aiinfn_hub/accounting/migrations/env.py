"""Alembic's environment for the accounting ledger: ledger.upgrade runs it.

The URL comes from the Alembic config's attributes (not its ini options, where '%' in a
password would need escaping). The ledger's version table is its own, so it may share a database
with JupyterHub's (whose Alembic table is alembic_version).
"""

from alembic import context
from sqlalchemy import create_engine, pool

VERSION_TABLE = "aiinfn_accounting_version"

url = context.config.attributes["url"]
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, version_table=VERSION_TABLE)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
