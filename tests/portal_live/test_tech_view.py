"""Technician view on simulated readings with an air-conditioning failure."""

from __future__ import annotations

import pytest


@pytest.fixture
def env_live(live):
    from tests.portal_live.conftest import seed_environment

    return live, seed_environment(live)


def _rollup_rows(live) -> tuple[int, int]:
    """(rollup rows, rollup ranges waiting for a refresh)."""
    import sqlalchemy as sa

    from instrument_env.models import DirtyRange, Rollup

    with live.db() as db:
        return tuple(
            db.execute(sa.select(sa.func.count()).select_from(t)).scalar()
            for t in (Rollup, DirtyRange)
        )


def test_tech_view_shows_rooms_alarms_gates_and_acknowledges(env_live):
    live, alarm_id = env_live
    researcher = live.app.test_client()
    live.login(researcher, "alice")  # the technician view is for operators only
    assert researcher.get("/tech/").status_code == 403
    assert researcher.post(f"/tech/alarms/{alarm_id}/ack", data={"comment": "x"}).status_code == 403
    assert researcher.get("/tech/charts/krios-temp-high.svg").status_code == 403

    client = live.app.test_client()
    live.login(client, "tech")
    stored = _rollup_rows(live)
    assert stored[1] > 0  # readings waiting for the monitor's rollup refresh
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
    assert b"no readings" not in chart.data  # readings not yet rolled up are read raw
    assert client.get("/tech/charts/krios-temp-high.svg?span=7d").status_code == 200
    assert _rollup_rows(live) == stored  # the page and its charts wrote nothing
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


def test_provenance_download_and_alarm_escalation_relay(env_live):
    import json

    live, alarm_id = env_live
    client = live.app.test_client()
    headers = live.token(client, "alice")
    sid = live.session_id
    files = client.get(f"/api/v1/sessions/{sid}/files", headers=headers).get_json()["files"]
    assert "environment.json" in [f["name"] for f in files]
    env = json.loads(
        client.get(f"/api/v1/sessions/{sid}/files/environment.json", headers=headers).data
    )
    assert env["room"] == "krios-room" and env["in_limits"] is False
    assert alarm_id in [a["id"] for a in env["alarms"]]
    manifest = json.loads(
        client.get(f"/api/v1/sessions/{sid}/files/manifest.json", headers=headers).data
    )
    assert "environment.json" in [f["name"] for f in manifest["files"]]

    # Escalations of unacknowledged alarms are relayed to the outbox by the worker, once,
    # whatever pages anyone opens.
    from instrument_env.models import Notification

    with live.db() as db:
        unsent = db.query(Notification).filter(Notification.sent_at.is_(None)).count()
    assert unsent > 0, "unacknowledged alarms older than 15 min escalate"
    client = live.app.test_client()
    live.login(client, "tech")
    client.get("/tech/")
    assert live.outbox("alarm") == []  # a page view relays nothing
    live.run_worker_jobs()
    live.run_worker_jobs()
    alarms = live.outbox("alarm")
    assert len(alarms) == unsent
    assert alarms[0].to == ["em-oncall@msb-em.example.org"]
    assert alarms[0].subject.startswith("[critical] unacknowledged alarm")
    assert alarms[0].status == "pending"
    with live.db() as db:
        assert db.query(Notification).filter(Notification.sent_at.is_(None)).count() == 0


def test_alarm_page_shows_its_history_and_the_room_its_vibration_class(env_live):
    live, alarm_id = env_live
    researcher = live.app.test_client()
    live.login(researcher, "alice")
    assert researcher.get(f"/tech/alarms/{alarm_id}").status_code == 403

    client = live.app.test_client()
    live.login(client, "tech")
    index = client.get("/tech/").get_data(as_text=True)
    assert f'href="/tech/alarms/{alarm_id}"' in index  # each active alarm links to its page
    krios = index.split('data-room="krios-room"', 1)[1].split("</section>", 1)[0]
    assert "Vibration criterion" in krios and "krios-vib <strong>VC-" in krios
    prep = index.split('data-room="prep-lab"', 1)[1].split("</section>", 1)[0]
    assert "Vibration criterion" not in prep  # no vibration sensor there

    before = client.get(f"/tech/alarms/{alarm_id}").get_data(as_text=True)
    assert "firing" in before and "AC unit restarted" not in before
    client.post(f"/tech/alarms/{alarm_id}/ack", data={"comment": "AC unit restarted"})
    page = client.get(f"/tech/alarms/{alarm_id}")
    assert page.status_code == 200
    history = page.get_data(as_text=True).split('id="alarm-history"', 1)[1]
    rows = history.split("</tbody>", 1)[0].count("<tr>")
    assert rows >= 3  # opened, fired, acknowledged (oldest first)
    assert history.index("firing") < history.index("acknowledged")
    assert "tech" in history and "AC unit restarted" in history
    assert client.get("/tech/alarms/999999").status_code == 404
