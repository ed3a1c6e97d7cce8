"""Alembic environment for Story Studio.

There is no alembic.ini: ``storage.db.migrate`` builds the Config in code and
passes an open connection in ``config.attributes["connection"]`` (Alembic
cookbook, "Sharing a Connection across one or more programmatic migration
commands"). Logging is left to the application, so no fileConfig() here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storage.models import Base, compared_by_alembic

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite can barely ALTER a table; batch mode lets future migrations
        # use op.batch_alter_table to copy-and-swap tables there.
        render_as_batch=True,
        compare_type=True,
        include_object=compared_by_alembic,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL for sqlalchemy.url."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    # When the caller already opened a transaction (storage.db.migrate does),
    # this joins it rather than committing on its own.
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    # Fallback for the alembic command line with -x/sqlalchemy.url set.
    from storage.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
