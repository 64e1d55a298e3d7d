"""Engines, sessions and schema migrations of instrument_env.

instrument_env shares the portal's database URL but keeps its own Alembic history
(version table ``alembic_version_env``), so both migrate independently.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_env"


def make_engine(url: str, *, connect_timeout_s: float = 5.0, **kwargs) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout,
    PostgreSQL a ``connect_timeout`` (``connect_timeout_s``, whole seconds, at least 2 as
    libpq counts them) so a database that accepts but never answers cannot hang a new
    connection; statements are bounded where needed (the gate: :mod:`~instrument_env.deadline`)."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
    elif url.startswith("postgresql"):
        connect_args = dict(kwargs.pop("connect_args", {}))
        if "connect_timeout" not in sa.engine.make_url(url).query:  # the URL's own wins
            connect_args.setdefault("connect_timeout", max(2, int(round(connect_timeout_s))))
        kwargs["connect_args"] = connect_args
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def session_factory(url_or_engine: str | sa.Engine) -> sessionmaker[Session]:
    """A ``sessionmaker`` bound to an engine (made from the URL when a string is given)."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    return sessionmaker(bind=engine, expire_on_commit=False)


def _alembic_config(url_or_engine: str | sa.Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url_or_engine"] = url_or_engine
    return config


def upgrade(url: str | sa.Engine, revision: str = "head") -> None:
    """Create or migrate instrument_env's tables in the database at ``url``."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


def downgrade(url: str | sa.Engine, revision: str = "base") -> None:
    """Undo instrument_env's migrations down to ``revision`` (default: drop its tables)."""
    from alembic import command

    command.downgrade(_alembic_config(url), revision)


def current_revision(url: str | sa.Engine) -> str | None:
    """The applied instrument_env migration, or None on a database without its tables."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url) if isinstance(url, str) else url
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
