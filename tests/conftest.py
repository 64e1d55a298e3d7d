"""Shared fixtures.

``database_url`` runs a test once against SQLite (a temporary file) and once
against PostgreSQL (a fresh database created for the test session and dropped
after it). PostgreSQL is found through ``CRYOFAC_TEST_POSTGRES_URL`` (default:
the loopback server with trust auth). When it is unreachable the PostgreSQL
variant is skipped locally but FAILS when ``CI=true``: CI must really test it.
"""

from __future__ import annotations

import os
import uuid

import pytest

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of an administrative connection to the test PostgreSQL server."""
    url = os.environ.get("CRYOFAC_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to reach the server
        message = f"PostgreSQL unreachable at {url}: {exc.__class__.__name__}: {exc}".splitlines()[
            0
        ]
        if _in_ci():
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_database_url(postgres_server_url: str):
    """A new, empty PostgreSQL database for this test session; dropped afterwards."""
    import sqlalchemy as sa

    name = f"cryofac_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_server_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    """An empty database URL, once per backend. PostgreSQL tables are dropped after each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cryofac.sqlite3'}"
        return
    url = request.getfixturevalue("postgres_database_url")
    yield url
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
