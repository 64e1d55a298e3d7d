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
        with contextlib.suppress(Exception):
            if dialect == "sqlite":
                dbapi.interrupt()
            else:
                _shutdown_socket(dbapi)

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
