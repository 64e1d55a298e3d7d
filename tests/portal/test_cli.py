"""``cryofac portal`` commands: init-db (portal + instrument_env), create-user, seed-demo."""

from __future__ import annotations

import sqlalchemy as sa

from cryofac.cli import main


def test_init_db_create_user_seed_demo(database_url, capsys, monkeypatch):
    monkeypatch.setenv("CRYOFAC_SECRET_KEY", "test")
    monkeypatch.setenv("CRYOFAC_PASSWORD_TIME_COST", "1")
    monkeypatch.setenv("CRYOFAC_PASSWORD_MEMORY_KIB", "256")
    assert main(["portal", "init-db", "--database-url", database_url]) == 0
    assert "4 instruments loaded" in capsys.readouterr().out
    assert main(["portal", "init-db", "--database-url", database_url]) == 0  # idempotent
    monkeypatch.setenv("CRYOFAC_NEW_PASSWORD", "a-long-admin-password")
    assert (
        main(["portal", "create-user", "boss", "--role", "admin", "--database-url", database_url])
        == 0
    )
    assert main(["portal", "create-user", "boss", "--database-url", database_url]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["portal", "seed-demo", "--database-url", database_url]) == 0
    assert main(["portal", "seed-demo", "--database-url", database_url]) == 0  # idempotent
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        roles = dict(conn.execute(sa.text("SELECT username, role FROM users")).all())
        hashes = conn.execute(sa.text("SELECT password_hash FROM users")).scalars().all()
        instruments = conn.execute(sa.text("SELECT id FROM instruments ORDER BY id")).scalars()
        assert list(instruments) == ["glacios1", "glowdischarge1", "krios1", "vitrobot1"]
        state = conn.execute(sa.text("SELECT state FROM projects")).scalar()
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert roles["boss"] == "admin" and roles["researcher"] == "researcher"
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert state == "active"
    assert {"bookings", "sessions", "alembic_version"} <= tables
