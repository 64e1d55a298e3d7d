"""Database engine and sessions, one engine per application; schema upgrades through Alembic.

SQLite is the default (a file under the instance folder); PostgreSQL by URL. On SQLite
every transaction starts with ``BEGIN IMMEDIATE`` so writers are serialised (two
concurrent booking transactions cannot both see a free slot); on PostgreSQL booking
transactions take a per-instrument advisory lock and an exclusion constraint makes an
overlap impossible whatever the code does.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Alembic's version table for the portal (instrument_env uses ``alembic_version_env``).
VERSION_TABLE = "alembic_version"


def make_engine(url: str, **kwargs) -> sa.Engine:
    """An engine for ``url``; SQLite gets serialised writers, a busy timeout and foreign keys."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            if parsed.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", 60)
    kwargs.setdefault("pool_recycle", 1800)
    # a database that does not answer the connection is an error within seconds, not a hang
    # (the URL's own ``?connect_timeout=`` wins)
    connect_args = dict(kwargs.pop("connect_args", {}))
    if "connect_timeout" not in parsed.query:
        connect_args.setdefault("connect_timeout", 5)
    return sa.create_engine(url, connect_args=connect_args, **kwargs)


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str):
    """The Alembic configuration of the portal migrations, pointed at ``url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the portal schema at ``url`` to ``revision`` (existing rows are kept)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest portal schema revision the migrations know."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The portal schema revision at ``url`` (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
    finally:
        engine.dispose()


_ADVISORY_LOCK = {
    shared: sa.text(f"SELECT {function}(hashtext(:key))")
    for shared, function in (
        (False, "pg_advisory_xact_lock"),
        (True, "pg_advisory_xact_lock_shared"),
    )
}


def lock_instrument(db: Session, instrument_id: str, shared: bool = False) -> None:
    """Serialise booking writes on one key for the rest of the transaction.

    PostgreSQL: a transaction-scoped advisory lock keyed on ``instrument_id`` (any key
    string); ``shared`` holders run concurrently and exclude only exclusive holders.
    SQLite: nothing to do, ``BEGIN IMMEDIATE`` already holds the database write lock.
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(_ADVISORY_LOCK[shared], {"key": f"cryofac.booking.{instrument_id}"})


#: Views that only read, and are asked for most. On PostgreSQL their session runs in
#: autocommit mode, which spares a BEGIN and a ROLLBACK round trip per request: under
#: READ COMMITTED (the default) every statement takes its own snapshot whether or not
#: it is in a transaction, so they see exactly what they would see in one. A view that
#: writes, locks or needs one snapshot for several statements must not be listed.
READ_ONLY_ENDPOINTS = frozenset({"calendar.week", "api.list_bookings"})


#: Views that ask the environment gate whether a session may start. All their database
#: work — the log-in or token check, the gate, the writes, the rollback at the end — is
#: bounded in time (``SESSION_START_TIMEOUT_S``, :func:`instrument_env.deadline.bounded`):
#: a database that accepts and never answers makes them answer 503 within that time
#: (plus a new connection's connect timeout), and the stuck connection is discarded.
GATE_ENDPOINTS = frozenset({"api.transition_session", "staff.transition"})
#: Default bound (seconds) on a session transition's database work.
SESSION_START_TIMEOUT_S = 10.0


def _bound_request() -> None:
    from flask import current_app, g

    from instrument_env import deadline

    engine = current_app.extensions["cryofac.engine"]
    deadline.watch_engine(engine)
    seconds = float(current_app.config.get("SESSION_START_TIMEOUT_S", SESSION_START_TIMEOUT_S))
    g.cryofac_watch = deadline.start(seconds)


def get_db() -> Session:
    """The request's database session (opened on first use, closed at teardown)."""
    from flask import current_app, g, has_request_context, request

    if "cryofac_db" not in g:
        if has_request_context() and request.endpoint in GATE_ENDPOINTS:
            _bound_request()
        maker = current_app.extensions["cryofac.sessionmaker"]
        autocommit = current_app.extensions.get("cryofac.autocommit_engine")
        if (
            autocommit is not None
            and has_request_context()
            and request.endpoint in READ_ONLY_ENDPOINTS
        ):
            g.cryofac_db = maker(bind=autocommit)
        else:
            g.cryofac_db = maker()
    return g.cryofac_db


def close_db(_exc: BaseException | None = None) -> None:
    from flask import g

    session = g.pop("cryofac_db", None)
    watch = g.pop("cryofac_watch", None)
    try:
        if session is not None:
            session.close()  # its connection's reset is bounded too
    finally:
        if watch is not None:
            from instrument_env import deadline

            deadline.stop(watch)
