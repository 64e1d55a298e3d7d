"""iCal feed routes and notifications raised by real bookings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from portal.domain.timezones import local_text
from portal.ical import parse_calendar
from tests.portal.conftest import book_ok

#: The embedded facility.yaml's zone: every time a notice shows is in it, named.
FACILITY_ZONE = ZoneInfo("Asia/Shanghai")


def _times_are_local(message, *moments: datetime) -> None:
    """``message`` (an outbox row) shows ``moments`` in the facility's zone, named, and
    no time in UTC."""
    text = message.subject + "\n" + message.body
    for moment in moments:
        assert local_text(moment, FACILITY_ZONE) in text, text
    assert "(Asia/Shanghai)" in text
    assert "UTC" not in text and "+00:00" not in text, text
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text), text  # no ISO 8601 moment


def _book(client, headers, project_id, instrument="glacios1", hours=48):
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)
    return book_ok(client, headers, project_id, start, instrument)


def _feed_urls(live, client, username):
    live.login(client, username)
    html = client.get("/calendar/feeds").get_data(as_text=True)
    urls = re.findall(r"http://portal\.test(/ical/[^<\s\"]+\.ics)", html)
    assert urls
    return urls[0], urls[1:]


def test_user_and_instrument_feeds(live, client):
    mine = _book(client, live.token(client, "alice"), live.project_id)
    theirs = _book(client, live.token(client, "mallory"), live.other_project_id, hours=60)
    user_feed, instrument_feeds = _feed_urls(live, client, "alice")
    anonymous = live.app.test_client()  # calendar programs have no cookie
    feed = anonymous.get(user_feed)
    assert feed.status_code == 200 and feed.mimetype == "text/calendar"
    events = {e["UID"]: e for e in parse_calendar(feed.get_data(as_text=True))}
    assert f"booking-{mine['id']}@cryofac" in events  # (and the session booking of the fixture)
    assert f"booking-{theirs['id']}@cryofac" not in events
    assert "P-1" in events[f"booking-{mine['id']}@cryofac"]["SUMMARY"]

    uid = f"booking-{mine['id']}@cryofac".encode()
    glacios = next(u for u in instrument_feeds if uid in anonymous.get(u).data)
    by_uid = {e["UID"]: e for e in parse_calendar(anonymous.get(glacios).get_data(as_text=True))}
    assert "P-1" in by_uid[f"booking-{mine['id']}@cryofac"]["SUMMARY"]
    # another project's booking shows as busy only: no project, no name
    other = by_uid[f"booking-{theirs['id']}@cryofac"]
    assert other["SUMMARY"].endswith(": booked") and "P-2" not in str(other)

    assert anonymous.get("/ical/forged-token.ics").status_code == 404


def test_staff_instrument_feed_shows_every_booking_in_full(live, client):
    theirs = _book(client, live.token(client, "mallory"), live.other_project_id, hours=60)
    _, feeds = _feed_urls(live, client, "staff")
    anonymous = live.app.test_client()
    texts = [anonymous.get(u).get_data(as_text=True) for u in feeds]
    events = [e for t in texts for e in parse_calendar(t)]
    mallory = next(e for e in events if e["UID"] == f"booking-{theirs['id']}@cryofac")
    assert "P-2" in mallory["SUMMARY"]


def test_booking_confirmation_goes_through_the_outbox(live, client):
    from portal.notify import SmtpSettings
    from portal.worker import WorkerOptions, deliver_due

    before = len(live.outbox())
    booking = _book(client, live.token(client, "alice"), live.project_id)
    messages = live.outbox()
    confirmed = [m for m in messages[before:] if m.kind == "booking_confirmed"]
    assert len(confirmed) == 1 and confirmed[0].to == ["alice@lab.test"]
    assert confirmed[0].status == "pending"  # written with the booking; the worker sends it
    assert "Glacios" in confirmed[0].subject
    # a rejected (conflicting) booking writes nothing
    alice = live.token(client, "alice")
    refused = live.book(client, alice, "glacios1", booking["start"], booking["end"])
    assert refused.status_code == 409
    assert len(live.outbox()) == len(messages)
    # no SMTP server configured: the worker writes it to the log and marks it so
    factory = live.app.extensions["cryofac.sessionmaker"]
    assert deliver_due(factory, None, WorkerOptions()).sent == len(messages)
    assert {m.status for m in live.outbox()} == {"logged"}
    unused = SmtpSettings(host="127.0.0.1", port=1)  # nothing is due any more
    assert deliver_due(factory, unused, WorkerOptions()).sent == 0


def test_run_completion_notifies_project_once_whatever_pages_are_opened(live, client):
    import json

    summary = live.run_dir / "summary.json"
    data = json.loads(summary.read_text())
    data["state"] = "complete"
    summary.write_text(json.dumps(data))
    live.login(client, "alice")
    assert client.get(f"/sessions/{live.session_id}/run/status.json").status_code == 200
    assert live.outbox("run_complete") == []  # a page view writes nothing
    for _ in range(3):  # the worker's periodic job finds it, once
        live.run_worker_jobs()
    done = live.outbox("run_complete")
    assert len(done) == 1
    assert "4.00 Å" in done[0].body
    assert sorted(done[0].to) == ["alice@lab.test", "pi@lab.test", "untrained@lab.test"]


def test_staff_approval_sends_booking_approved(live, client):
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=10)
    booking = client.post(
        "/api/v1/bookings",
        json={
            "instrument_id": "krios1",
            "project_id": live.project_id,
            "start": start.isoformat(),
            "end": (start + timedelta(hours=24)).isoformat(),
        },
        headers=live.token(client, "alice"),
    ).get_json()
    assert booking["status"] == "pending", booking
    assert not live.outbox("booking_approved")
    decided = client.post(
        f"/api/v1/bookings/{booking['id']}/decision",
        json={"approve": True},
        headers=live.token(client, "staff"),
    )
    assert decided.status_code == 200
    approved = live.outbox("booking_approved")
    assert len(approved) == 1 and approved[0].to == ["alice@lab.test"]
    assert "Krios" in approved[0].subject
    _times_are_local(approved[0], start, start + timedelta(hours=24))


def test_freed_slot_offers_the_waiting_list(live, client):
    booking = _book(client, live.token(client, "alice"), live.project_id)
    mallory = live.token(client, "mallory")
    wait = client.post(
        "/api/v1/waitlist",
        json={
            "instrument_id": "glacios1",
            "project_id": live.other_project_id,
            "start": booking["start"],
            "end": booking["end"],
        },
        headers=mallory,
    )
    assert wait.status_code == 201
    assert not live.outbox("waitlist_offer")
    cancelled = client.delete(
        f"/api/v1/bookings/{booking['id']}", headers=live.token(client, "alice")
    )
    assert cancelled.status_code == 204
    offers = live.outbox("waitlist_offer")
    assert len(offers) == 1 and offers[0].to == ["mallory@lab.test"]
    assert "Glacios" in offers[0].subject
    slot = [datetime.fromisoformat(booking[k]) for k in ("start", "end")]
    _times_are_local(offers[0], *slot)
    (confirmed,) = live.outbox("booking_confirmed")
    _times_are_local(confirmed, *slot)


def test_the_worker_evaluates_alarms_and_relays_escalations_on_its_own(live):
    """Readings ingested, nobody evaluating alarms nor opening a page: the worker's
    periodic jobs fire the alarm, escalate it and queue its notice, once."""
    from instrument_env.models import Alarm, Notification
    from tests.portal_live.conftest import seed_environment

    seed_environment(live, evaluate=False)
    with live.db() as db:
        assert db.query(Notification).count() == 0
    report = live.run_worker_jobs(evaluate_alarms=True)
    assert report.queued["alarms_evaluated"] > 0
    alarms = live.outbox("alarm")
    assert alarms and report.queued["alarm"] == len(alarms)
    assert alarms[0].subject.startswith("[critical] unacknowledged alarm")
    with live.db() as db:  # instrument_env writes ISO 8601 in UTC; the notice does not
        raw = db.query(Notification).order_by(Notification.id).first()
        fired = db.get(Alarm, raw.alarm_id).fired_at
    assert fired.isoformat() in raw.body
    _times_are_local(alarms[0], fired)
    live.run_worker_jobs(evaluate_alarms=True)
    assert len(live.outbox("alarm")) == len(alarms)  # escalated once
