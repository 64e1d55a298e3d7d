"""Fixtures of the instrument_env tests: a migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from instrument_env.db import make_engine, session_factory, upgrade
from instrument_env.limits import load_env_config

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def env_config():
    return load_env_config()


@pytest.fixture
def env_engine(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def env_session(env_engine):
    with session_factory(env_engine)() as session:
        yield session
