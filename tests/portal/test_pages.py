"""Pages a person uses: log in (CSRF, rate limit), calendar, book with the failed rule inline."""

from __future__ import annotations

import sqlalchemy as sa

from portal.models import Booking, LoginAttempt
from tests.portal.conftest import csrf as _csrf


def test_login_calendar_book_and_cancel(world, client, slot):
    assert client.get("/calendar/glacios1").status_code == 302  # logged out → login page
    response = world.login(client, "alice")
    assert response.status_code == 302
    with world.db() as db, client.session_transaction() as cookie:
        from portal.models import User

        stored_hash = db.get(User, world.users["alice"]).password_hash
        assert all(str(v) not in stored_hash for v in cookie.values() if len(str(v)) >= 8)
        assert cookie["epoch"] == db.get(User, world.users["alice"]).auth_epoch
    week = client.get("/calendar/glacios1")
    assert week.status_code == 200 and "Glacios" in week.get_data(as_text=True)
    assert client.get("/static/style.css").status_code == 200

    token = _csrf(client, "/bookings/new")
    start, end = slot(6, 4)  # inside glacios1's 12 h lead time
    form = {
        "csrf_token": token,
        "instrument_id": "glacios1",
        "project_id": str(world.project_id),
        "start": start[:16],
        "end": end[:16],
    }
    refused = client.post("/bookings/new", data=form)
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert 'data-rule="lead_time"' in page and "Too soon: glacios1 must be booked" in page
    assert "Rule broken" not in page and "lead_time:" not in page

    start, end = slot(72, 4)
    form.update(start=start, end=end)
    booked = client.post("/bookings/new", data=form)
    assert booked.status_code == 302, booked.get_data(as_text=True)
    mine = client.get("/bookings/mine").get_data(as_text=True)
    assert "glacios1" in mine and "confirmed" in mine
    with world.db() as db:
        booking = db.scalar(sa.select(Booking))
        assert booking.start_at.isoformat() == start
    overlap = client.post("/bookings/new", data=form)
    assert overlap.status_code == 409 and "already booked" in overlap.get_data(as_text=True)
    week = client.get(f"/calendar/glacios1?week={start[:10]}").get_data(as_text=True)
    assert "P-1" in week
    cancel = client.post(f"/bookings/{booking.id}/cancel", data={"csrf_token": token})
    assert cancel.status_code == 302
    with world.db() as db:
        assert db.get(Booking, booking.id).status == "cancelled"


def test_login_is_slowed_after_failures(world, client):
    world.app.config["LOGIN_BASE_DELAY_S"] = 3600.0  # longer than the test; capped at 300 s
    token = _csrf(client, "/login")
    for _ in range(5):
        bad = client.post(
            "/login", data={"csrf_token": token, "username": "alice", "password": "wrong-one"}
        )
        assert bad.status_code == 401
    throttled = world.login(client, "alice")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 299  # capped
    api = client.post("/api/v1/tokens", json={"username": "alice", "password": world.password})
    assert api.status_code == 429 and api.get_json()["error"]["code"] == "too_many_attempts"
    assert "Retry-After" in api.headers
    # other users are unaffected
    assert world.login(client, "pi").status_code == 302
    with world.db() as db:
        assert db.scalar(sa.select(sa.func.count(LoginAttempt.id))) >= 6


def test_open_redirect_is_refused(world, client):
    token = _csrf(client, "/login")
    response = client.post(
        "/login?next=//evil.example/x",
        data={"csrf_token": token, "username": "alice", "password": world.password},
    )
    assert response.status_code == 302
    assert "evil.example" not in response.headers["Location"]


def test_staff_approves_and_admin_reads_the_audit_log(world, client, slot):
    alice = world.token(client, "alice")
    start, end = slot(120, 24)
    pending = world.book(client, alice, "krios1", start, end).get_json()
    assert pending["status"] == "pending"
    world.login(client, "staff")
    page = client.get("/staff/").get_data(as_text=True)
    assert f"<td>{pending['id']}</td>" in page
    token = _csrf(client, "/staff/")
    decided = client.post(
        f"/staff/bookings/{pending['id']}/decision",
        data={"csrf_token": token, "approve": "1", "reason": "fits the schedule"},
    )
    assert decided.status_code == 302
    allocated = client.post(
        f"/projects/{world.project_id}/allocation",
        data={"csrf_token": token, "instrument_kind": "microscope", "hours": "36"},
    )
    assert allocated.status_code == 302
    for bad in ("nan", "-1", "lots"):
        client.post(
            f"/projects/{world.project_id}/allocation",
            data={"csrf_token": token, "instrument_kind": "microscope", "hours": bad},
        )
    project_page = client.get(f"/projects/{world.project_id}").get_data(as_text=True)
    assert "<td>microscope</td><td>36</td><td>24.0</td>" in project_page
    client.post("/logout", data={"csrf_token": token})
    world.login(client, "admin")
    audit = client.get("/admin/audit?entity=booking").get_data(as_text=True)
    assert "approve" in audit and "fits the schedule" in audit and "staff" in audit


def test_waitlist_through_the_pages(world, client, slot):
    alice = world.token(client, "alice")
    start, end = slot(60, 6)
    held = world.book(client, alice, "glacios1", start, end).get_json()
    world.login(client, "mallory")
    token = _csrf(client, "/bookings/new")
    form = {
        "csrf_token": token,
        "instrument_id": "glacios1",
        "project_id": str(world.other_project_id),
        "start": start,
        "end": end,
    }
    taken = client.post("/bookings/new", data=form)
    assert taken.status_code == 409 and "Join the waitlist" in taken.get_data(as_text=True)
    assert client.post("/waitlist", data=form).status_code == 302
    assert "waiting" in client.get("/bookings/mine").get_data(as_text=True)
    assert client.delete(f"/api/v1/bookings/{held['id']}", headers=alice).status_code == 204
    mine = client.get("/bookings/mine").get_data(as_text=True)
    assert "slot freed" in mine and "Book it" in mine
    assert client.post("/bookings/new", data=form).status_code == 302
    assert "slot freed" not in client.get("/bookings/mine").get_data(as_text=True)
