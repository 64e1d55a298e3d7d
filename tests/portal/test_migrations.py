"""Migrations: they build exactly the models' schema, and an upgrade keeps existing rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from portal import db as portal_db
from portal.models import Base


def test_migrations_match_the_models(database_url):
    portal_db.upgrade(database_url)
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    not (type_ == "table" and reflected and compare_to is None)
                ),
            },
        )
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_from_previous_revision_keeps_data(database_url):
    portal_db.upgrade(database_url, "0001")
    assert portal_db.current_revision(database_url) == "0001"
    engine = sa.create_engine(database_url)
    now = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO rooms (id, name) VALUES ('r1', 'Room 1')"))
        conn.execute(
            sa.text(
                "INSERT INTO instruments (id, name, kind, room_id, requires_approval,"
                " environment_gated, min_duration_h, max_duration_h, lead_time_h,"
                " cancellation_deadline_h, active) VALUES ('m1', 'Scope', 'microscope', 'r1',"
                " false, true, 1, 48, 0, 0, true)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO users (id, username, email, full_name, password_hash, role, active,"
                " created_at) VALUES (1, 'pi', '', 'P I', 'x', 'pi', true, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO projects (id, code, title, abstract, pi_id, state, created_at)"
                " VALUES (1, 'P', 'T', '', 1, 'active', :t)"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO bookings (id, instrument_id, project_id, user_id, start_at, end_at,"
                " status, note, created_at) VALUES (1, 'm1', 1, 1, :s, :e, 'confirmed', 'kept', :t)"
            ),
            {"s": now, "e": now + timedelta(hours=24), "t": now},
        )
    engine.dispose()

    portal_db.upgrade(database_url)
    assert portal_db.current_revision(database_url) == portal_db.head_revision()
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT note, status FROM bookings WHERE id = 1")).one()
        assert tuple(row) == ("kept", "confirmed")
        assert conn.execute(sa.text("SELECT count(*) FROM sessions")).scalar() == 0
        assert conn.execute(sa.text("SELECT username FROM users")).scalar() == "pi"
        assert conn.execute(sa.text("SELECT auth_epoch FROM users")).scalar() == 0
    engine.dispose()
    # and back down to the previous revision, keeping the core tables
    portal_db.downgrade(database_url, "0001")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM bookings")).scalar() == "kept"
        assert "sessions" not in sa.inspect(conn).get_table_names()
    engine.dispose()
