"""A bounded time for database work: interrupt a session's connection at a deadline.

A database that accepts connections but never answers (a dead host behind a live
proxy, a network partition after connecting) leaves a client blocked in a read
forever; a server-side ``statement_timeout`` cannot help because the server never sees
the statement. :func:`deadline` arms a timer that, at the deadline, interrupts the
session's DB-API connection: SQLite's ``interrupt()``, or for PostgreSQL a shutdown of
the connection's socket, so the blocked read returns and the driver raises (the
connection is then invalidated by SQLAlchemy). New connections are bounded by the
engine's ``connect_timeout`` (:func:`instrument_env.db.make_engine`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


class DeadlineExceeded(Exception):
    """The database did not answer within the deadline."""


@contextlib.contextmanager
def deadline(session: Session, seconds: float) -> Iterator[threading.Event]:
    """Interrupt ``session``'s database work after ``seconds``; yields an Event that is
    set when the deadline fired. Checks out the session's connection first."""
    connection = session.connection()
    dbapi = connection.connection.dbapi_connection
    dialect = connection.dialect.name
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        log.warning("database did not answer within %.1f s: interrupting", seconds)
        _interrupt(dbapi, dialect)

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _shutdown_socket(dbapi) -> None:
    """Shut the socket of a psycopg (3) connection down, both ways."""
    fd = dbapi.pgconn.socket
    dup = socket.socket(fileno=os.dup(fd))
    try:
        dup.shutdown(socket.SHUT_RDWR)
    finally:
        dup.close()


class Watch:
    """A deadline for all database work of one thread on watched engines (see
    :func:`bounded`): at the deadline every connection the thread holds from them has
    its socket shut, so a blocked read returns and the driver raises; a connection
    checked out after the deadline is shut at once. Such a connection is invalidated
    when it goes back to the pool, never reused."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[int, tuple[object, str]] = {}
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            self.fired.set()
            held = list(self._held.values())
        if held:
            log.warning("database did not answer within %.1f s: interrupting", self.seconds)
        for dbapi, dialect in held:
            _interrupt(dbapi, dialect)

    def hold(self, dbapi, dialect: str) -> None:
        with self._lock:
            self._held[id(dbapi)] = (dbapi, dialect)
            fired = self.fired.is_set()
        if fired:
            _interrupt(dbapi, dialect)

    def release(self, dbapi) -> None:
        with self._lock:
            self._held.pop(id(dbapi), None)


def _interrupt(dbapi, dialect: str) -> None:
    with contextlib.suppress(Exception):
        if dialect == "sqlite":
            dbapi.interrupt()
        else:
            _shutdown_socket(dbapi)


_current = threading.local()
_WATCH_KEY = "cryofac.watch"


def watch_engine(engine) -> None:
    """Let :func:`bounded` blocks bound ``engine``'s connections (idempotent)."""
    import sqlalchemy as sa

    pool = engine.pool
    if getattr(pool, "_cryofac_watched", False):
        return
    dialect = engine.dialect.name

    def _hold(dbapi_connection, record, *_proxy) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            record.info[_WATCH_KEY] = watch
            watch.hold(dbapi_connection, dialect)

    # on connect too, before the dialect's first queries on a new connection (insert)
    sa.event.listen(pool, "connect", _hold, insert=True)
    sa.event.listen(pool, "checkout", _hold)

    @sa.event.listens_for(pool, "checkin")
    def _checkin(dbapi_connection, record) -> None:
        watch = record.info.pop(_WATCH_KEY, None)
        if watch is None:
            return
        watch.release(dbapi_connection)
        if watch.fired.is_set() and dbapi_connection is not None:
            record.invalidate()  # its socket may be shut or its reply still on the way

    pool._cryofac_watched = True


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[Watch]:
    """Bound this thread's database work on watched engines (:func:`watch_engine`) to
    ``seconds`` from now; yields the :class:`Watch` (``fired`` is set at the deadline).
    New connections are bounded by their own connect timeout."""
    previous = getattr(_current, "watch", None)
    watch = Watch(seconds)
    _current.watch = watch
    watch._timer.start()
    try:
        yield watch
    finally:
        watch._timer.cancel()
        _current.watch = previous


def current() -> Watch | None:
    """The :class:`Watch` of this thread's innermost :func:`bounded` block, if any."""
    return getattr(_current, "watch", None)


def start(seconds: float) -> Watch:
    """Enter a :func:`bounded` block by hand (e.g. at a request's first database use);
    leave it with :func:`stop`."""
    manager = bounded(seconds)
    watch = manager.__enter__()
    watch._manager = manager
    return watch


def stop(watch: Watch) -> None:
    watch._manager.__exit__(None, None, None)
