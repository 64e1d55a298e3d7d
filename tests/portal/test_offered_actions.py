"""Pages offer only what the person may do now, and say rule errors in plain words."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from portal.models import Booking
from tests.portal.conftest import csrf as _csrf


def _local(moment: datetime) -> str:
    from zoneinfo import ZoneInfo

    from portal.views.calendar import load_facility_tz

    zone: ZoneInfo = load_facility_tz(None)
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def test_my_bookings_title_and_cancel_only_before_the_deadline(world, client):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with world.db() as db:
        soon, later = (  # glacios1: 24 h cancellation deadline, so the first is inside it
            Booking(
                instrument_id="glacios1",
                project_id=world.project_id,
                user_id=world.users["alice"],
                start_at=now + timedelta(hours=h),
                end_at=now + timedelta(hours=h + 4),
                status="confirmed",
            )
            for h in (13, 100)
        )
        db.add_all([soon, later])
        db.commit()
        soon_id, later_id = soon.id, later.id
    assert world.login(client, "alice").status_code == 302
    page = client.get("/bookings/mine").get_data(as_text=True)
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert title.strip() == "My bookings · cryofac"
    assert f"/bookings/{later_id}/cancel" in page
    assert f"/bookings/{soon_id}/cancel" not in page  # it would be refused
    refused = client.post(
        f"/bookings/{soon_id}/cancel", data={"csrf_token": _csrf(client, "/bookings/mine")}
    )
    assert refused.status_code == 302  # and is, if posted anyway
    with world.db() as db:
        assert db.get(Booking, soon_id).status == "confirmed"


def test_researchers_see_no_staff_project_moves(world, client):
    assert world.login(client, "alice").status_code == 302
    page = client.get(f"/projects/{world.project_id}").get_data(as_text=True)
    assert "→ closed" not in page
    staff = world.app.test_client()
    assert world.login(staff, "staff").status_code == 302
    assert "→ closed" in staff.get(f"/projects/{world.project_id}").get_data(as_text=True)


def test_waitlist_is_offered_for_someone_elses_slot_only(world, client):
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=60)
    headers = world.token(client, "mallory")
    taken = world.book(
        client,
        headers,
        "glacios1",
        start.isoformat(),
        (start + timedelta(hours=4)).isoformat(),
        project_id=world.other_project_id,
    )
    assert taken.status_code == 201
    assert world.login(client, "alice").status_code == 302
    form = {
        "csrf_token": _csrf(client, "/bookings/new"),
        "instrument_id": "glacios1",
        "project_id": str(world.project_id),
        "start": _local(start + timedelta(hours=1)),
        "end": _local(start + timedelta(hours=5)),
    }
    theirs = client.post("/bookings/new", data=form)
    assert theirs.status_code == 409 and "Join the waitlist" in theirs.get_data(as_text=True)

    form.update(start=_local(start + timedelta(hours=10)), end=_local(start + timedelta(hours=14)))
    assert client.post("/bookings/new", data=form).status_code == 302
    form.update(start=_local(start + timedelta(hours=11)), end=_local(start + timedelta(hours=15)))
    own = client.post("/bookings/new", data=form)
    assert own.status_code == 409 and "already booked" in own.get_data(as_text=True)
    assert "Join the waitlist" not in own.get_data(as_text=True)


def test_rule_errors_are_plain_words(world, client):
    assert world.login(client, "alice").status_code == 302
    start = datetime.now(UTC) + timedelta(hours=48)
    form = {
        "csrf_token": _csrf(client, "/bookings/new"),
        "instrument_id": "glacios1",
        "project_id": str(world.project_id),
        "start": _local(start),
        "end": _local(start - timedelta(hours=2)),
    }
    page = client.post("/bookings/new", data=form).get_data(as_text=True)
    alert = re.search(r'role="alert"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert alert == "The end must be after the start."
    assert "Rule broken" not in page and "time_order" not in alert
