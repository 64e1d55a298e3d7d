"""Session start (API and pages) and the CLI gate on a database that accepts
connections and then never answers: a real TCP proxy in front of PostgreSQL forwards,
then black-holes every connection, pooled ones included. Each path answers 503
``{"allowed": false, "reasons": [...]}`` (the CLI: exit 1 with the reason) within its
configured bound, and the stuck connection is never handed out again."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from instrument_env.cli import env_group
from instrument_env.db import upgrade as env_upgrade
from portal import db as portal_db
from portal.models import AcqSession
from tests.instrument_env.faults import FaultProxy, ready_session
from tests.portal.conftest import make_app, seed_world

#: the bounds of this test (short, so that it costs seconds)
SESSION_START_S = 1.5
GATE_S = 1.0


@pytest.mark.slow
@pytest.mark.postgres
def test_session_start_and_cli_gate_answer_503_when_the_database_goes_silent(
    postgres_database_url,
):
    url = sa.engine.make_url(postgres_database_url)
    portal_db.upgrade(postgres_database_url)
    env_upgrade(postgres_database_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = (
        url.set(host="127.0.0.1", port=proxy.port)
        .update_query_dict({"connect_timeout": "2"})
        .render_as_string(hide_password=False)
    )
    app = make_app(
        proxied,
        SESSION_START_TIMEOUT_S=SESSION_START_S,
        ENV_GATE_TIMEOUT_S=GATE_S,
        WTF_CSRF_ENABLED=False,
    )
    engine = app.extensions["cryofac.engine"]
    try:
        world = seed_world(app)
        client = app.test_client()
        session_id = ready_session(world, client)
        staff = world.token(client, "staff")
        pages = app.test_client()
        login = {"username": "staff", "password": world.password}
        assert pages.post("/login", data=login).status_code == 302
        api_url = f"/api/v1/sessions/{session_id}/transition"
        page_url = f"/staff/sessions/{session_id}/transition"
        # forwarding: the gate decides (no readings: closed, 409 with the reasons)
        closed = client.post(api_url, json={"state": "acquiring"}, headers=staff)
        assert closed.status_code == 409 and "no readings" in str(closed.get_json())
        assert engine.pool.checkedin() >= 1  # pooled before the black hole

        proxy.mode = "blackhole"  # the pooled connections now hang, new ones too
        began = time.monotonic()
        silent = client.post(api_url, json={"state": "acquiring"}, headers=staff)
        first_s = time.monotonic() - began
        body = silent.get_json()
        assert silent.status_code == 503, body
        assert body["allowed"] is False
        assert body["reasons"] == [
            f"database unavailable (OperationalError: no answer within {SESSION_START_S:g} s)"
        ]
        assert first_s < 30  # bounded (not a timing claim: a hang would never return)
        # a new connection is refused by its connect timeout: 503 with the reason
        again = client.post(api_url, json={"state": "acquiring"}, headers=staff)
        assert again.status_code == 503 and again.get_json()["allowed"] is False
        assert "database unavailable" in again.get_json()["reasons"][0]
        # the page: a 503 page with the reason, not a redirect or a bare 500
        page = pages.post(page_url, data={"state": "acquiring"})
        assert page.status_code == 503
        assert "database unavailable" in page.get_data(as_text=True)
        # the CLI, with its own connection: exit 1 with the reason
        cli = CliRunner().invoke(env_group, ["--db", proxied, "gate", "krios1"])
        assert cli.exit_code == 1 and "connection timeout expired" in cli.output

        # the database answers again: no stuck connection was kept in the pool (a reused
        # one would still wait for, or read, a reply meant for an earlier statement)
        proxy.mode = "forward"
        for _ in range(3):
            back = client.post(api_url, json={"state": "acquiring"}, headers=staff)
            assert back.status_code == 409, back.get_json()
        assert pages.post(page_url, data={"state": "acquiring"}).status_code == 302
        with world.db() as db:
            assert db.get(AcqSession, session_id).state == "ready"
    finally:
        proxy.close()
        engine.dispose()
        cleanup = sa.create_engine(postgres_database_url)
        with cleanup.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        cleanup.dispose()


@pytest.mark.postgres
def test_cli_gate_bounded_when_the_database_goes_silent_after_log_in(postgres_database_url):
    url = sa.engine.make_url(postgres_database_url)
    # forwards each connection's log-in (startup packet), then swallows everything
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 5432), hole_after=120)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        args = ["--db", proxied, "gate", "krios1", "--timeout", "1"]
        cli = CliRunner().invoke(env_group, args)
        assert cli.exit_code == 1, cli.output
        assert "cannot open the database: no answer within 1 s" in cli.output
    finally:
        proxy.close()
