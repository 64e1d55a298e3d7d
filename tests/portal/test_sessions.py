"""Session lifecycle: transitions, the environment gate (fail closed), audited overrides."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from portal.domain import sessions as lifecycle
from portal.domain.errors import GateClosed, InvalidTransition
from portal.models import AcqSession, AuditEntry, User


def _session_for(world, client, slot, instrument="glacios1") -> int:
    alice = world.token(client, "alice")
    booking = world.book(client, alice, instrument, slot(48, 8)[0], slot(48, 8)[1]).get_json()
    with world.db() as db:
        return db.scalar(sa.select(AcqSession.id).where(AcqSession.booking_id == booking["id"]))


def _move(client, headers, session_id, state, **extra):
    return client.post(
        f"/api/v1/sessions/{session_id}/transition", json={"state": state, **extra}, headers=headers
    )


def test_gate_fails_closed_and_staff_override_is_audited(world, client, slot):
    session_id = _session_for(world, client, slot)
    tech = world.token(client, "tech")
    staff = world.token(client, "staff")
    assert _move(client, tech, session_id, "acquiring").status_code == 409  # not ready yet
    assert _move(client, tech, session_id, "ready").status_code == 200
    # no environment readings in this database: the gate must refuse (without even the
    # environment's tables it cannot decide: 503, see tests/instrument_env)
    from instrument_env import db as env_db

    env_db.upgrade(world.app.config["DATABASE_URL"])
    closed = _move(client, tech, session_id, "acquiring")
    assert closed.status_code == 409, closed.get_json()
    assert closed.get_json()["error"]["code"] == "gate_closed"
    # a technician may not override; staff may, with a written reason
    assert (
        _move(
            client,
            tech,
            session_id,
            "acquiring",
            override_gate=True,
            reason="room fine per handheld meter",
        ).status_code
        == 403
    )
    assert (
        _move(
            client, staff, session_id, "acquiring", override_gate=True, reason="short"
        ).status_code
        == 400
    )
    opened = _move(
        client,
        staff,
        session_id,
        "acquiring",
        override_gate=True,
        reason="humidity sensor replaced; handheld reading 38 %RH",
    )
    assert opened.status_code == 200, opened.get_json()
    body = opened.get_json()
    assert body["state"] == "acquiring" and body["gate"]["allowed"] is False
    assert body["operator"]["username"] == "staff"
    with world.db() as db:
        override = db.scalar(
            sa.select(AuditEntry).where(
                AuditEntry.entity == "session",
                AuditEntry.entity_id == str(session_id),
                AuditEntry.action == "gate_override",
            )
        )
        assert override is not None and "humidity sensor replaced" in override.reason
        assert override.before["gate_allowed"] is False and override.before["gate_reasons"]
        moves = db.scalars(
            sa.select(AuditEntry.after)
            .where(AuditEntry.entity == "session", AuditEntry.action == "transition")
            .order_by(AuditEntry.id)
        ).all()
        assert [m["state"] for m in moves] == ["ready", "acquiring"]
    assert _move(client, tech, session_id, "processing").status_code == 200
    assert _move(client, tech, session_id, "complete").status_code == 200
    final = client.get(f"/api/v1/sessions/{session_id}", headers=world.token(client, "alice"))
    assert final.get_json()["state"] == "complete" and final.get_json()["ended_at"]
    assert _move(client, tech, session_id, "aborted", reason="late").status_code == 409


def test_lifecycle_in_the_domain_with_an_open_gate(world, client, slot):
    session_id = _session_for(world, client, slot)
    calls = []

    def open_gate(db, instrument_id, at):
        calls.append((instrument_id, at))
        return lifecycle.GateResult(True, [], at)

    with world.db() as db:
        tech = db.get(User, world.users["tech"])
        session = db.get(AcqSession, session_id)
        at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        with pytest.raises(InvalidTransition):
            lifecycle.transition(db, tech, session, "complete", now=at)
        lifecycle.transition(db, tech, session, "ready", now=at)
        result = lifecycle.transition(db, tech, session, "acquiring", now=at, gate=open_gate)
        assert result.allowed and calls == [("glacios1", at)]
        assert session.started_at == at and session.operator_id == tech.id
        lifecycle.set_folders(db, tech, session, "/data/raw/s1", "/data/runs/s1")
        with pytest.raises(Exception, match="reason"):
            lifecycle.transition(db, tech, session, "aborted", now=at)
        lifecycle.transition(db, tech, session, "aborted", reason="vacuum fault", now=at)
        db.commit()
        assert session.state == "aborted" and session.run_dir == "/data/runs/s1"


def test_closed_gate_without_override_changes_nothing(world, client, slot):
    session_id = _session_for(world, client, slot)

    def closed_gate(db, instrument_id, at):
        return lifecycle.GateResult(False, ["krios-room humidity 61 %RH above 50 %RH"], at)

    with world.db() as db:
        staff = db.get(User, world.users["staff"])
        session = db.get(AcqSession, session_id)
        lifecycle.transition(db, staff, session, "ready")
        with pytest.raises(GateClosed, match="humidity"):
            lifecycle.transition(db, staff, session, "acquiring", gate=closed_gate)
        assert session.state == "ready" and session.started_at is None


def test_cancelling_a_booking_aborts_its_scheduled_session(world, client, slot):
    session_id = _session_for(world, client, slot)
    alice = world.token(client, "alice")
    with world.db() as db:
        booking_id = db.get(AcqSession, session_id).booking_id
    assert client.delete(f"/api/v1/bookings/{booking_id}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/sessions/{session_id}", headers=alice).get_json()["state"] == (
        "aborted"
    )


def test_gate_judges_by_the_portals_facility_config(world, client, slot, tmp_path):
    """The session-start gate reads the limits of the app's FACILITY_CONFIG_DIR, not the
    embedded config: a sensor renamed there is the one the refusal names."""
    from cryofac import config as cfg
    from instrument_env import db as env_db

    custom = tmp_path / "config"
    shutil.copytree(cfg.config_dir(), custom)
    for name in ("facility.yaml", "limits.yaml"):
        path = custom / name
        path.write_text(path.read_text().replace("screen-t1", "screen-t1-custom"))
    world.app.config["FACILITY_CONFIG_DIR"] = str(custom)
    env_db.upgrade(world.app.config["DATABASE_URL"])  # the env tables, still no readings
    session_id = _session_for(world, client, slot)
    tech = world.token(client, "tech")
    staff = world.token(client, "staff")
    assert _move(client, tech, session_id, "ready").status_code == 200
    refused = _move(client, tech, session_id, "acquiring")
    assert refused.status_code == 409
    assert "screen-t1-custom" in json.dumps(refused.get_json())
    overridden = _move(
        client, staff, session_id, "acquiring", override_gate=True, reason="handheld meter ok"
    )
    assert overridden.status_code == 200
    reasons = " ".join(overridden.get_json()["gate"]["reasons"])
    assert "screen-t1-custom" in reasons and "screen-t1 " not in reasons
