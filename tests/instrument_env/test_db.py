from __future__ import annotations

import sqlalchemy as sa

from instrument_env.db import VERSION_TABLE, current_revision, downgrade, make_engine, upgrade
from instrument_env.models import EnvBase


def test_upgrade_creates_env_tables_with_own_version_table(database_url):
    engine = make_engine(database_url)
    assert current_revision(engine) is None
    upgrade(engine)
    upgrade(engine)  # idempotent
    tables = set(sa.inspect(engine).get_table_names())
    assert set(EnvBase.metadata.tables) <= tables
    assert VERSION_TABLE in tables
    assert "alembic_version" not in tables  # the portal's version table stays the portal's
    assert current_revision(engine) == "env0004"
    downgrade(engine)
    assert not {t for t in sa.inspect(engine).get_table_names() if t.startswith("env_")}
    engine.dispose()


def test_migration_matches_models(database_url):
    """Autogenerate finds nothing to do: the hand-written migration matches the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_object": lambda o, n, t, r, c: (
                    not (t == "table" and not n.startswith("env_"))
                ),
                "version_table": VERSION_TABLE,
            },
        )
        diff = compare_metadata(context, EnvBase.metadata)
    engine.dispose()
    assert diff == []
