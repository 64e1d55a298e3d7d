"""The portal's /api/v1 routes for instrument_env (portal/api/env.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from instrument_env import alarms
from instrument_env.sim import EnvSimulator, fault_at
from tests.instrument_env.faults import env_portal


@pytest.fixture
def api(database_url):
    app, client, headers = env_portal(
        database_url, users=(("tech", "technician"), ("alice", "researcher"))
    )
    yield app, client, headers
    app.extensions["cryofac.engine"].dispose()


def test_readings_gate_alarms_ack(api, env_config):
    app, client, headers = api
    tech, alice = headers("tech"), headers("alice")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=20)
    door = fault_at("vibration", now - timedelta(minutes=5), 10, room="krios-room", magnitude=10)
    readings = EnvSimulator(env_config, seed=2, rooms=["krios-room"]).readings(start, now, [door])
    bad = {
        "sensor": "krios-t1",
        "quantity": "temperature",
        "ts": "2026-01-01T00:00:00",
        "value": 1,
        "unit": "°C",
    }
    r = client.post("/api/v1/env/readings", json=readings + [bad], headers=tech)
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["accepted"] == len(readings)
    assert body["rejected"] == [
        {
            "index": len(readings),
            "reason": "ts '2026-01-01T00:00:00' has no UTC offset",
            "kind": "invalid",
        }
    ]
    again = client.post("/api/v1/env/readings", json=readings[:100], headers=tech)
    assert again.status_code == 202 and again.get_json()["accepted"] == 100
    # researchers may not post readings; bodies must be arrays; auth is required
    assert client.post("/api/v1/env/readings", json=readings[:1], headers=alice).status_code == 403
    assert client.post("/api/v1/env/readings", json={"a": 1}, headers=tech).status_code == 400
    assert client.post("/api/v1/env/readings", json=[]).status_code == 401

    gate = client.get("/api/v1/instruments/krios1/gate", headers=alice)
    assert gate.status_code == 200
    decision = gate.get_json()
    assert decision["allowed"] is False
    assert any("krios-vib vibration" in reason for reason in decision["reasons"])
    assert datetime.fromisoformat(decision["checked_at"]).tzinfo is not None
    missing = client.get("/api/v1/instruments/titan9/gate", headers=alice)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"

    with app.extensions["cryofac.sessionmaker"]() as db:
        alarms.evaluate(db, now, env_config)
        db.commit()
    listed = client.get("/api/v1/alarms?state=firing", headers=alice).get_json()
    vib = [a for a in listed if a["rule_id"] == "krios-vibration"]
    assert len(vib) == 1 and vib[0]["severity"] == "critical"
    assert client.get("/api/v1/alarms?state=sleepy", headers=alice).status_code == 422
    url = f"/api/v1/alarms/{vib[0]['id']}/ack"
    assert client.post(url, json={"comment": "x"}, headers=alice).status_code == 403
    assert client.post(url, json={"comment": " "}, headers=tech).status_code == 422
    acked = client.post(url, json={"comment": "crane test next door"}, headers=tech)
    assert acked.status_code == 200, acked.get_json()
    assert (
        acked.get_json()["state"] == "acknowledged"
        and acked.get_json()["acknowledged_by"] == "tech"
    )
    conflict = client.post(url, json={"comment": "again"}, headers=tech)
    assert conflict.status_code == 409 and conflict.get_json()["error"]["code"] == "conflict"
    assert conflict.get_json()["error"]["message"].startswith(
        f"alarm {vib[0]['id']} was already acknowledged by tech at "
    )
    assert (
        client.post("/api/v1/alarms/999999/ack", json={"comment": "x"}, headers=tech).status_code
        == 404
    )
