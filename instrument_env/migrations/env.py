"""Alembic environment of instrument_env (version table ``alembic_version_env``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from cryofac.migrations import run_online
from instrument_env.db import VERSION_TABLE, make_engine
from instrument_env.models import EnvBase

config = context.config
target_metadata = EnvBase.metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # Only our tables: the portal's live in the same database.
    if type_ == "table":
        return name.startswith("env_")
    return True


def run_migrations_online() -> None:
    url_or_engine = config.attributes.get("url_or_engine") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = url_or_engine if isinstance(url_or_engine, sa.Engine) else make_engine(url_or_engine)
    with engine.connect() as connection:
        run_online(connection, target_metadata, VERSION_TABLE, _include_object)
    if not isinstance(url_or_engine, sa.Engine):
        engine.dispose()


if context.is_offline_mode():  # pragma: no cover
    raise SystemExit("instrument_env migrations run online only (instrument_env.db.upgrade)")
run_migrations_online()
