"""The JSON API basics: tokens, instruments, JSON errors with real status codes."""

from __future__ import annotations


def test_token_and_instruments(world, client):
    headers = world.token(client, "alice")
    response = client.get("/api/v1/instruments", headers=headers)
    assert response.status_code == 200
    ids = {row["id"]: row for row in response.get_json()}
    assert set(ids) == {"krios1", "glacios1", "vitrobot1", "glowdischarge1"}
    assert ids["krios1"]["kind"] == "microscope" and ids["krios1"]["room"] == "krios-room"


def test_errors_are_json_with_real_status(world, client):
    assert client.get("/api/v1/instruments").status_code == 401
    assert client.get("/api/v1/instruments").get_json()["error"]["code"] == "unauthorized"
    bad = client.post("/api/v1/tokens", json={"username": "alice", "password": "nope"})
    assert bad.status_code == 401 and "error" in bad.get_json()
    headers = world.token(client, "alice")
    missing = client.get("/api/v1/no-such-thing", headers=headers)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong_method = client.put("/api/v1/instruments", headers=headers)
    assert wrong_method.status_code == 405 and "error" in wrong_method.get_json()
    not_json = client.post("/api/v1/bookings", data="x", headers=headers)
    assert not_json.status_code == 400 and "error" in not_json.get_json()


def test_book_read_cancel(world, client, slot):
    headers = world.token(client, "alice")
    start, end = slot(48, 4)
    created = world.book(client, headers, "glacios1", start, end)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["status"] == "confirmed" and body["instrument_id"] == "glacios1"
    listed = client.get("/api/v1/bookings?instrument_id=glacios1", headers=headers).get_json()
    assert [b["id"] for b in listed] == [body["id"]]
    again = world.book(client, headers, "glacios1", start, end)
    assert again.status_code == 409
    assert client.delete(f"/api/v1/bookings/{body['id']}", headers=headers).status_code == 204
    assert client.get(f"/api/v1/bookings/{body['id']}", headers=headers).get_json()["status"] == (
        "cancelled"
    )
    assert world.password not in created.get_data(as_text=True)


def test_unexpected_errors_are_json_500_without_a_traceback(world, client):
    def boom():
        raise RuntimeError("secret internals /srv/db password=hunter2")

    world.app.add_url_rule("/api/v1/boom", "boom", boom)
    world.app.add_url_rule("/boom", "boom_page", boom)
    response = client.get("/api/v1/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "internal error"}}
    page = client.get("/boom")
    assert page.status_code == 500
    assert "hunter2" not in page.get_data(as_text=True)
    assert "Traceback" not in page.get_data(as_text=True)


def test_rule_and_gate_reasons_are_named_in_the_error(world, client, slot):
    headers = world.token(client, "alice")
    start, end = slot(2, 4)
    response = world.book(client, headers, "glacios1", start, end)
    assert response.status_code == 422
    assert response.get_json()["error"]["rule"] == "lead_time"


def test_token_revocation(world, client):
    headers = world.token(client, "alice")
    assert client.get("/api/v1/instruments", headers=headers).status_code == 200
    assert client.delete("/api/v1/tokens", headers=headers).status_code == 204
    assert client.get("/api/v1/instruments", headers=headers).status_code == 401


def test_facility_reload_updates_and_retires_instruments(world):
    from cryofac.config import load_facility
    from portal.domain.facility import load_facility_into_db
    from portal.models import AuditEntry, Instrument

    facility = load_facility()
    facility["instruments"] = [i for i in facility["instruments"] if i["id"] != "glowdischarge1"]
    facility["instruments"][0]["booking"]["max_duration_h"] = 96
    with world.db() as db:
        rooms, instruments = load_facility_into_db(db, facility)
        db.commit()
        assert (rooms, instruments) == (3, 3)
        assert db.get(Instrument, "glowdischarge1").active is False
        assert db.get(Instrument, "krios1").max_duration_h == 96
        change = (
            db.query(AuditEntry)
            .filter_by(entity="instrument", entity_id="krios1", action="update")
            .one()
        )
        assert change.before["max_duration_h"] == 72 and change.after["max_duration_h"] == 96


def test_a_body_field_of_the_wrong_type_is_named(world, client, slot):
    """400 naming the field and the type it must have (portal.api.common.body_field)."""
    staff = world.token(client, "staff")
    start, end = slot(48, 4)
    cases = [
        ("/api/v1/bookings", {"instrument_id": 5, "project_id": 1, "start": start, "end": end},
         "instrument_id must be a string"),
        ("/api/v1/bookings/1/decision", {"approve": "yes"}, "approve must be true or false"),
        ("/api/v1/sessions/1/transition", {"state": 3}, "state must be a string"),
    ]  # fmt: skip
    for url, body, message in cases:
        response = client.post(url, json=body, headers=staff)
        assert response.status_code == 400, (url, response.get_json())
        assert response.get_json()["error"]["message"] == message
