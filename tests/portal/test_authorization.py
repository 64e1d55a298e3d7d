"""Authorization probe: outsiders, roles, password hashes, CSRF, SQL metacharacters."""

from __future__ import annotations

import re
from urllib.parse import quote

import sqlalchemy as sa

from portal.models import AcqSession

SQL_PAYLOADS = (
    "' OR '1'='1",
    "1; DROP TABLE bookings; --",
    '" OR ""="',
    "%' --",
    "_%\\",
    "krios1' UNION SELECT password_hash FROM users --",
)


def _book(client, headers, instrument, project_id, start, end):
    return client.post(
        "/api/v1/bookings",
        json={"instrument_id": instrument, "project_id": project_id, "start": start, "end": end},
        headers=headers,
    )


def _login_cookie(client, user_id: int, app) -> None:
    from portal.models import User

    with app.extensions["cryofac.sessionmaker"]() as db:
        epoch = db.get(User, user_id).auth_epoch
    with client.session_transaction() as session:
        session["user_id"] = user_id
        session["epoch"] = epoch


def test_researcher_cannot_reach_another_projects_things(world, client, slot):
    alice = world.token(client, "alice")
    staff = world.token(client, "staff")
    mallory = world.token(client, "mallory")
    booking = _book(client, alice, "krios1", world.project_id, *slot(100, 24)).get_json()
    client.post(f"/api/v1/bookings/{booking['id']}/decision", json={"approve": True}, headers=staff)
    with world.db() as db:
        session_id = db.scalar(
            sa.select(AcqSession.id).where(AcqSession.booking_id == booking["id"])
        )
    assert client.get(f"/api/v1/sessions/{session_id}", headers=alice).status_code == 200

    assert client.get(f"/api/v1/bookings/{booking['id']}", headers=mallory).status_code == 404
    assert client.delete(f"/api/v1/bookings/{booking['id']}", headers=mallory).status_code == 404
    assert client.get(f"/api/v1/sessions/{session_id}", headers=mallory).status_code == 404
    assert client.get("/api/v1/bookings", headers=mallory).get_json() == []
    listed = client.get("/api/v1/bookings?instrument_id=krios1", headers=mallory)
    assert listed.status_code == 200 and listed.get_json() == []
    # staff-only and operator-only endpoints
    decision = client.post(
        f"/api/v1/bookings/{booking['id']}/decision", json={"approve": False}, headers=mallory
    )
    assert decision.status_code == 403
    move = client.post(
        f"/api/v1/sessions/{session_id}/transition", json={"state": "ready"}, headers=alice
    )
    assert move.status_code == 403
    assert client.get(f"/api/v1/sessions/{session_id}", headers=alice).get_json()["state"] == (
        "scheduled"
    )
    # pages: outsiders get 404 for the project, 403 for staff and admin pages
    _login_cookie(client, world.users["mallory"], world.app)
    assert client.get(f"/projects/{world.project_id}").status_code == 404
    assert client.get("/staff/").status_code == 403
    assert client.get("/admin/audit").status_code == 403
    page = client.get("/calendar/krios1").get_data(as_text=True)
    assert "P-1" not in page and "alice" not in page  # busy, but not whose
    _login_cookie(client, world.users["staff"], world.app)
    assert client.get("/staff/").status_code == 200
    assert client.get("/admin/audit").status_code == 403
    _login_cookie(client, world.users["admin"], world.app)
    assert client.get("/admin/audit").status_code == 200


def test_no_response_carries_a_password_hash(world, client, slot):
    alice = world.token(client, "alice")
    _book(client, alice, "glacios1", world.project_id, *slot(48, 4))
    bodies = [
        client.post("/api/v1/tokens", json={"username": "alice", "password": world.password}),
        client.get("/api/v1/bookings", headers=alice),
        client.get("/api/v1/instruments", headers=alice),
    ]
    _login_cookie(client, world.users["admin"], world.app)
    for url in ("/calendar/glacios1", "/bookings/mine", "/projects/", "/staff/", "/admin/audit"):
        bodies.append(client.get(url))
    bodies.append(client.get(f"/projects/{world.project_id}"))
    for response in bodies:
        assert response.status_code in (200, 201), response.request.path
        text = response.get_data(as_text=True)
        assert "$argon2" not in text and "password_hash" not in text, response.request.path


def test_every_state_changing_form_needs_a_csrf_token(world, client):
    app, admin_id = world.app, world.users["admin"]
    assert app.config.get("WTF_CSRF_ENABLED", True)
    refused = client.post("/login", data={"username": "admin", "password": "x" * 12})
    assert refused.status_code == 400
    _login_cookie(client, admin_id, app)
    checked = 0
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.rule.startswith("/api/"):
            continue
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "1", rule.rule)
        response = client.post(url, data={"state": "closed", "approve": "1"})
        assert response.status_code == 400, (rule.rule, response.status_code)
        assert "CSRF" in response.get_data(as_text=True), rule.rule
        checked += 1
    assert checked >= 8
    # with the token, the same form goes through
    page = client.get("/projects/new").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    ok = client.post(
        "/projects/new", data={"csrf_token": token, "code": "P-CSRF", "title": "with token"}
    )
    assert ok.status_code == 302


def test_sql_metacharacters_are_harmless(world, client, slot):
    alice = world.token(client, "alice")
    admin_client = world.app.test_client()
    _login_cookie(admin_client, world.users["admin"], world.app)
    for n, payload in enumerate(SQL_PAYLOADS):
        _probe(world, client, admin_client, alice, slot, payload, n)


def _probe(world, client, admin_client, alice, slot, payload, n):
    start, end = slot(48 + 8 * n, 4)
    q = quote(payload)
    probes = [
        client.get(f"/api/v1/bookings?instrument_id={q}", headers=alice),
        client.get(f"/api/v1/bookings?start={q}", headers=alice),
        client.get(f"/api/v1/bookings?limit={q}", headers=alice),
        client.get(f"/api/v1/bookings/{q}", headers=alice),
        client.get(f"/api/v1/sessions/{q}", headers=alice),
        _book(client, alice, payload, world.project_id, start, end),
        _book(client, alice, "glacios1", payload, start, end),
        _book(client, alice, "glacios1", world.project_id, payload, end),
        client.post("/api/v1/tokens", json={"username": payload, "password": payload}),
        client.get("/api/v1/instruments", headers={"Authorization": f"Bearer {payload}"}),
    ]
    for response in probes:
        assert 200 <= response.status_code < 500, (response.request.url, response.status_code)
        if response.request.path.startswith("/api/"):
            assert response.is_json
    assert probes[0].get_json() == []
    noted = world.book(client, alice, "glacios1", start, end, note=payload)
    assert noted.status_code == 201
    for url in (
        f"/calendar/{q}",
        f"/calendar/glacios1?week={q}",
        f"/admin/audit?entity={q}",
        f"/admin/audit?page={q}",
        f"/projects/{q}",
    ):
        assert admin_client.get(url).status_code in (200, 404), url
    with world.db() as db:
        from portal.models import Booking, User

        assert db.scalar(sa.select(sa.func.count(User.id))) == len(world.users)
        assert db.scalar(sa.select(Booking.note).where(Booking.id == noted.get_json()["id"])) == (
            payload
        )
