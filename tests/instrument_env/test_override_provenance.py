"""A session started over a closed gate (staff override, through the portal) shows the
override in instrument_env's records and in the acquisition's provenance."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from instrument_env.db import upgrade as env_upgrade
from instrument_env.models import GateOverride
from instrument_env.provenance import summarize
from portal import db as portal_db
from portal.models import AcqSession
from tests.instrument_env.faults import ready_session
from tests.portal.conftest import make_app, seed_world


def test_staff_override_reaches_env_gate_overrides_and_provenance(database_url, env_config):
    portal_db.upgrade(database_url)
    env_upgrade(database_url)
    app = make_app(database_url)
    world = seed_world(app)
    client = app.test_client()
    try:
        session_id = ready_session(world, client)
        staff = world.token(client, "staff")
        url = f"/api/v1/sessions/{session_id}/transition"
        reason = "FSE on site; room checked with a handheld meter"
        opened = client.post(
            url,
            json={"state": "acquiring", "override_gate": True, "reason": reason},
            headers=staff,
        )
        assert opened.status_code == 200, opened.get_json()
        with world.db() as db:
            override = db.execute(sa.select(GateOverride)).scalar_one()
            assert override.instrument_id == "glacios1" and override.user == "staff"
            assert override.reason == reason and "no readings" in override.refused_reasons
            started = db.get(AcqSession, session_id).started_at

            summary = summarize(
                db,
                "glacios1",
                started - timedelta(seconds=1),
                started + timedelta(hours=1),
                config=env_config,
            )
        assert [o["reason"] for o in summary["gate_overrides"]] == [reason], summary[
            "gate_overrides"
        ]
        assert summary["covered"] is False  # no readings at all during the acquisition
    finally:
        app.extensions["cryofac.engine"].dispose()
