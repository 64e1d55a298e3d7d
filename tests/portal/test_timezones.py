"""One time-zone story: gaps refused, repeated hours asked, durations in UTC, zone named."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from portal.domain.errors import InvalidInput
from portal.domain.timezones import hours_between, local_text, resolve_local
from portal.models import Booking
from tests.portal.conftest import csrf as _csrf

BERLIN = ZoneInfo("Europe/Berlin")


def test_spring_forward_gap_is_refused_with_the_zone_named():
    with pytest.raises(InvalidInput) as refused:
        resolve_local("2027-03-28T02:30", BERLIN, "start")
    message = str(refused.value)
    assert "does not exist in Europe/Berlin" in message and "60 minutes" in message
    # either side of the gap is fine
    assert resolve_local("2027-03-28T01:59", BERLIN, "start") == datetime(
        2027, 3, 28, 0, 59, tzinfo=UTC
    )
    assert resolve_local("2027-03-28T03:00", BERLIN, "start") == datetime(
        2027, 3, 28, 1, 0, tzinfo=UTC
    )


def test_fall_back_hour_is_asked_and_charged_its_true_length():
    with pytest.raises(InvalidInput) as asked:
        resolve_local("2027-10-31T02:00", BERLIN, "start")
    assert "happens twice in Europe/Berlin" in str(asked.value)
    assert "CEST" in str(asked.value) and "CET" in str(asked.value)
    first = resolve_local("2027-10-31T02:00", BERLIN, "start", "first")
    second = resolve_local("2027-10-31T02:00", BERLIN, "start", "second")
    end = resolve_local("2027-10-31T03:00", BERLIN, "end")
    assert hours_between(first, end) == 2.0 and hours_between(second, end) == 1.0
    # wall-clock arithmetic in one zone would say 1 h for both; UTC says the truth
    wall_start = datetime(2027, 10, 31, 2, 0, tzinfo=BERLIN)
    wall_end = datetime(2027, 10, 31, 3, 0, tzinfo=BERLIN)
    assert hours_between(wall_start, wall_end) == 2.0
    assert resolve_local("2027-10-31T02:00+01:00", BERLIN, "start") == second  # offsets win


def test_local_text_names_the_zone():
    moment = datetime(2026, 12, 15, 2, 0, tzinfo=UTC)
    assert local_text(moment, BERLIN) == "2026-12-15 03:00 CET (Europe/Berlin)"
    assert local_text(moment, ZoneInfo("UTC")) == "2026-12-15 02:00 UTC"


def test_booking_form_across_clock_changes(world):
    from tests.portal.conftest import make_app

    # the zone is read at start-up: an app of the same database, set to Berlin
    app = make_app(world.app.config["DATABASE_URL"], FACILITY_TIMEZONE="Europe/Berlin")
    client = app.test_client()
    try:
        token = _csrf(client, "/login")
        login = {"csrf_token": token, "username": "alice", "password": world.password}
        assert client.post("/login", data=login).status_code == 302
        token = _csrf(client, "/bookings/new")
        form = {
            "csrf_token": token,
            "instrument_id": "glacios1",
            "project_id": str(world.project_id),
            "start": "2027-03-28T02:30",
            "end": "2027-03-28T05:30",
        }
        gap = client.post("/bookings/new", data=form)
        assert gap.status_code == 400
        assert "does not exist in Europe/Berlin" in gap.get_data(as_text=True)
        assert "end must be after" not in gap.get_data(as_text=True)

        form.update(start="2027-10-31T01:00", end="2027-10-31T02:30")
        twice = client.post("/bookings/new", data=form)
        assert twice.status_code == 400 and "happens twice" in twice.get_data(as_text=True)
        form.update(end_fold="second")  # 01:00 CEST to 02:30 CET: 2.5 h
        booked = client.post("/bookings/new", data=form)
        assert booked.status_code == 302, booked.get_data(as_text=True)[:2000]
        with world.db() as db:
            booking = db.scalars(sa.select(Booking).order_by(Booking.id.desc())).first()
            assert booking.duration_h == 2.5
            assert booking.start_at == datetime(2027, 10, 30, 23, 0, tzinfo=UTC)

        # a clash is reported in the facility's zone, named, in the API too
        headers = world.token(client, "mallory")
        clash = world.book(
            client,
            headers,
            "glacios1",
            "2027-10-30T22:00:00+00:00",
            "2027-10-31T03:00:00+00:00",
            project_id=world.other_project_id,
        )
        assert clash.status_code == 409
        message = clash.get_json()["error"]["message"]
        assert "2027-10-31 01:00 CEST (Europe/Berlin)" in message
        assert "02:30 CET (Europe/Berlin)" in message and "+00:00" not in message

        mine = client.get("/bookings/mine").get_data(as_text=True)
        assert "Start (Europe/Berlin)" in mine and "2027-10-31 01:00 CEST" in mine
    finally:
        app.extensions["cryofac.engine"].dispose()
