"""Alembic's environment for the accounting ledger: ledger.upgrade and ledger.downgrade run it.

The URL comes from the Alembic config's attributes (not its ini options, where '%' in a
password would need escaping). The ledger's version table is its own, so it may share a database
with JupyterHub's (whose Alembic table is alembic_version). Online only.
"""

from alembic import context
from sqlalchemy import create_engine, pool

VERSION_TABLE = "aiinfn_accounting_version"


def run() -> None:
    engine = create_engine(context.config.attributes["url"], poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, version_table=VERSION_TABLE)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


# Alembic executes this file under a name of its own; imported as a module of the package (as
# the tests that walk the product do) it does nothing.
if __name__ != "aiinfn_hub.accounting.migrations.env":
    run()
