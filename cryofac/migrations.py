"""The one step both Alembic environments share: run the migrations on a connection.

``portal`` and ``instrument_env`` keep their schemas in one database, each with its own
version table and its own ``include_object`` filter; their ``env.py`` files find the
connection and call :func:`run_online`. SQLite gets batch mode (``ALTER`` by copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_online(
    connection: Any,
    target_metadata: Any,
    version_table: str,
    include_object: Callable[..., bool],
) -> None:
    """Configure Alembic's context for ``connection`` and run the pending migrations."""
    from alembic import context

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
