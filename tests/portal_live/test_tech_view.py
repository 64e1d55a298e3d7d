"""Technician view on simulated readings with an air-conditioning failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("instrument_env.gate")


@pytest.fixture
def env_live(live):
    import instrument_env.db
    from instrument_env import alarms
    from instrument_env.ingest import ingest_readings
    from instrument_env.limits import load_env_config
    from instrument_env.sim import EnvSimulator, fault_at

    url = live.app.config["DATABASE_URL"]
    instrument_env.db.upgrade(url)
    config = load_env_config()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=2)
    fault = fault_at(
        "ac_failure", now - timedelta(minutes=50), 60, room="krios-room", magnitude=4.0
    )
    sim = EnvSimulator(config, seed=1, rooms=["krios-room"], noise=0.0)
    with live.db() as db:
        result = ingest_readings(
            db, sim.readings(start, now, [fault]), source="sim", config=config, now=now
        )
        assert result.rejected == []
        db.commit()
        for minutes in range(50, -1, -5):  # the alarm engine runs every few minutes
            alarms.evaluate(db, now - timedelta(minutes=minutes), config)
            db.commit()
        firing = [a for a in alarms.list_alarms(db, "firing") if a.room == "krios-room"]
        assert firing, "the AC failure should fire an alarm"
    return live, firing[0].id


def test_tech_view_shows_rooms_alarms_gates_and_acknowledges(env_live):
    live, alarm_id = env_live
    client = live.app.test_client()
    live.login(client, "tech")
    page = client.get("/tech/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Krios room (B012)" in html
    assert f'data-alarm-id="{alarm_id}"' in html
    assert "critical" in html
    # the Krios gate is closed by the critical alarm and the temperature, and says why
    gate_rows = html.split('id="gates"', 1)[1].split("</table>", 1)[0]
    krios_row = gate_rows.split("Krios G4", 1)[1].split("</tr>", 1)[0]
    assert "closed" in krios_row and "<li>" in krios_row
    # prep lab instruments are not environment-gated
    assert "not gated" in gate_rows

    chart = client.get("/tech/charts/krios-temp-high.svg?span=24h")
    assert chart.status_code == 200 and chart.mimetype == "image/svg+xml"
    assert b"no readings" not in chart.data  # rollups were refreshed from the readings
    assert client.get("/tech/charts/krios-temp-high.svg?span=7d").status_code == 200
    assert client.get("/tech/charts/nope.svg").status_code == 404

    empty = client.post(f"/tech/alarms/{alarm_id}/ack", data={"comment": "  "})
    assert empty.status_code == 302  # refused with a message, state unchanged
    done = client.post(
        f"/tech/alarms/{alarm_id}/ack", data={"comment": "AC unit restarted"}, follow_redirects=True
    )
    assert done.status_code == 200
    assert "AC unit restarted" in done.get_data(as_text=True)
    from instrument_env.alarms import get_alarm

    with live.db() as db:
        alarm = get_alarm(db, alarm_id)
        assert alarm.state == "acknowledged" and alarm.acknowledged_by == "tech"


def test_tech_view_is_for_operators_only(env_live):
    live, alarm_id = env_live
    client = live.app.test_client()
    live.login(client, "alice")
    assert client.get("/tech/").status_code == 403
    assert client.post(f"/tech/alarms/{alarm_id}/ack", data={"comment": "x"}).status_code == 403
    assert client.get("/tech/charts/krios-temp-high.svg").status_code == 403
