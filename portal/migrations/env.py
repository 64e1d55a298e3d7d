"""Alembic environment of the portal schema (version table ``alembic_version``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from cryofac.migrations import run_online
from portal.models import Base

config = context.config
target_metadata = Base.metadata
VERSION_TABLE = config.get_main_option("version_table") or "alembic_version"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Only compare the portal's own tables (instrument_env shares the database)."""
    if type_ == "table" and reflected and compare_to is None:
        return name in target_metadata.tables
    return True


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    run_online(connection, target_metadata, VERSION_TABLE, include_object)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
