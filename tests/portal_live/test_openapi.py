"""Every documented response of /api/v1 checked against real responses of the app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jsonschema import ValidationError

from portal.openapi import document, validate_response


def _slot(hours_from_now: float, duration_h: float) -> tuple[str, str]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start += timedelta(hours=hours_from_now)
    return start.isoformat(), (start + timedelta(hours=duration_h)).isoformat()


def client_token(client, username: str, password: str) -> str:
    response = client.post("/api/v1/tokens", json={"username": username, "password": password})
    assert response.status_code == 201
    return response.get_json()["token"]


class Checker:
    def __init__(self, client, doc):
        self.client, self.doc, self.seen = client, doc, set()

    def __call__(self, method, url, template, expected, **kwargs):
        response = self.client.open(url, method=method, **kwargs)
        assert response.status_code == expected, (method, url, response.get_data(as_text=True))
        body = response.get_json(silent=True) if response.data else None
        if response.mimetype == "application/json":
            validate_response(self.doc, method, template, response.status_code, body)
        self.seen.add((template, method.lower()))
        return response


def test_document_is_served_and_well_formed(client):
    from jsonschema import Draft202012Validator

    served = client.get("/api/v1/openapi.json")
    assert served.status_code == 200
    doc = served.get_json()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_api_route_is_documented(live):
    from portal.openapi import flask_rule_to_template

    doc = document()
    routes = {
        (flask_rule_to_template(rule.rule), method.lower())
        for rule in live.app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented paths the API does not have"


def test_validation_catches_a_drifted_response():
    doc = document()
    with pytest.raises(ValidationError):
        validate_response(doc, "get", "/sessions/{id}/files", 200, {"session_id": 1})
    with pytest.raises(ValidationError):
        validate_response(doc, "get", "/instruments", 200, [{"id": "krios1", "name": "K"}])
    with pytest.raises(KeyError):
        validate_response(doc, "get", "/instruments", 418, {})


def test_real_responses_match_the_document(live, client):
    doc = document()
    check = Checker(client, doc)
    check(
        "POST",
        "/api/v1/tokens",
        "/tokens",
        401,
        json={"username": "alice", "password": "wrong!!!!"},
    )
    check("POST", "/api/v1/tokens", "/tokens", 400, json=["not", "an", "object"])
    token = check(
        "POST",
        "/api/v1/tokens",
        "/tokens",
        201,
        json={"username": "alice", "password": live.password},
    ).get_json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    check("GET", "/api/v1/instruments", "/instruments", 401)
    check("GET", "/api/v1/instruments", "/instruments", 200, headers=auth)

    start, end = _slot(48, 4)
    body = {"instrument_id": "glacios1", "project_id": live.project_id, "start": start, "end": end}
    booking = check(
        "POST", "/api/v1/bookings", "/bookings", 201, json=body, headers=auth
    ).get_json()
    check("POST", "/api/v1/bookings", "/bookings", 409, json=body, headers=auth)
    past = dict(body, start=_slot(-10, 1)[0], end=_slot(-9, 1)[0])
    check("POST", "/api/v1/bookings", "/bookings", 422, json=past, headers=auth)
    check("POST", "/api/v1/bookings", "/bookings", 400, json={"instrument_id": 5}, headers=auth)
    other = dict(body, project_id=live.other_project_id)
    check("POST", "/api/v1/bookings", "/bookings", 403, json=other, headers=auth)
    check("GET", "/api/v1/bookings?instrument_id=glacios1", "/bookings", 200, headers=auth)
    check("GET", f"/api/v1/bookings/{booking['id']}", "/bookings/{id}", 200, headers=auth)
    check("GET", "/api/v1/bookings/999999", "/bookings/{id}", 404, headers=auth)
    check("DELETE", f"/api/v1/bookings/{booking['id']}", "/bookings/{id}", 204, headers=auth)
    wait = dict(body, instrument_id="glacios1")
    check("POST", "/api/v1/waitlist", "/waitlist", 201, json=wait, headers=auth)
    check("POST", "/api/v1/waitlist", "/waitlist", 403, json=other, headers=auth)

    staff = {"Authorization": "Bearer " + client_token(check.client, "staff", live.password)}
    start_k, end_k = _slot(24 * 12, 24)
    krios = {
        "instrument_id": "krios1",
        "project_id": live.project_id,
        "start": start_k,
        "end": end_k,
    }
    pending = check("POST", "/api/v1/bookings", "/bookings", 201, json=krios, headers=auth)
    decision = "/bookings/{id}/decision"
    bid = pending.get_json()["id"]
    check(
        "POST",
        f"/api/v1/bookings/{bid}/decision",
        decision,
        403,
        json={"approve": True},
        headers=auth,
    )
    check(
        "POST",
        f"/api/v1/bookings/{bid}/decision",
        decision,
        400,
        json={"approve": "yes"},
        headers=staff,
    )
    check(
        "POST",
        f"/api/v1/bookings/{bid}/decision",
        decision,
        200,
        json={"approve": True},
        headers=staff,
    )
    check(
        "POST",
        f"/api/v1/bookings/{bid}/decision",
        decision,
        409,
        json={"approve": True},
        headers=staff,
    )

    sid, other_sid = live.session_id, live.other_session_id
    check("GET", f"/api/v1/sessions/{sid}", "/sessions/{id}", 200, headers=auth)
    check("GET", f"/api/v1/sessions/{other_sid}", "/sessions/{id}", 404, headers=auth)
    move = "/sessions/{id}/transition"
    check(
        "POST",
        f"/api/v1/sessions/{sid}/transition",
        move,
        403,
        json={"state": "complete"},
        headers=auth,
    )
    check(
        "POST",
        f"/api/v1/sessions/{sid}/transition",
        move,
        409,
        json={"state": "ready"},
        headers=staff,
    )
    check(
        "POST",
        f"/api/v1/sessions/{sid}/transition",
        move,
        200,
        json={"state": "complete"},
        headers=staff,
    )
    check("GET", f"/api/v1/sessions/{sid}/files", "/sessions/{id}/files", 200, headers=auth)
    check("GET", f"/api/v1/sessions/{other_sid}/files", "/sessions/{id}/files", 404, headers=auth)
    files = "/sessions/{id}/files/{name}"
    check("GET", f"/api/v1/sessions/{sid}/files/map.mrc", files, 200, headers=auth)
    check(
        "GET",
        f"/api/v1/sessions/{sid}/files/map.mrc",
        files,
        206,
        headers={**auth, "Range": "bytes=0-1"},
    )
    check(
        "GET",
        f"/api/v1/sessions/{sid}/files/map.mrc",
        files,
        416,
        headers={**auth, "Range": "bytes=999999999-"},
    )
    check("GET", f"/api/v1/sessions/{sid}/files/nothing.bin", files, 404, headers=auth)
    link = "/sessions/{id}/files/{name}/link"
    check("POST", f"/api/v1/sessions/{sid}/files/map.mrc/link", link, 201, headers=auth)
    check("POST", f"/api/v1/sessions/{other_sid}/files/map.mrc/link", link, 404, headers=auth)
    check("GET", "/api/v1/openapi.json", "/openapi.json", 200)
    check("DELETE", "/api/v1/tokens", "/tokens", 204, headers=auth)
    check("GET", "/api/v1/instruments", "/instruments", 401, headers=auth)  # revoked
    check("DELETE", "/api/v1/tokens", "/tokens", 401)

    _check_env(live, check)

    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    missing = documented - check.seen
    assert not missing, f"documented but never checked: {sorted(missing)}"


def _check_env(live, check):
    import instrument_env.db

    instrument_env.db.upgrade(live.app.config["DATABASE_URL"])
    tech = {
        "Authorization": "Bearer "
        + check.client.post(
            "/api/v1/tokens", json={"username": "tech", "password": live.password}
        ).get_json()["token"]
    }
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    readings = [
        {"sensor": "krios-t1", "quantity": "temperature", "ts": now, "value": 20.1, "unit": "°C"},
        {"sensor": "nope", "quantity": "temperature", "ts": now, "value": 1.0, "unit": "°C"},
    ]
    check("POST", "/api/v1/env/readings", "/env/readings", 202, json=readings, headers=tech)
    check("GET", "/api/v1/instruments/krios1/gate", "/instruments/{id}/gate", 200, headers=tech)
    check("GET", "/api/v1/instruments/nope/gate", "/instruments/{id}/gate", 404, headers=tech)
    check("GET", "/api/v1/alarms?state=open", "/alarms", 200, headers=tech)
    check(
        "POST",
        "/api/v1/alarms/999999/ack",
        "/alarms/{id}/ack",
        404,
        json={"comment": "x"},
        headers=tech,
    )


def test_the_document_is_built_from_the_routes_declarations(live):
    """The paths come from the URL map and each route's declaration: a new route with a
    declaration appears (with its path parameters read from the rule), one without is
    missing, so the coverage test above fails on it."""
    from flask import Flask

    from portal.api.spec import build_paths, ok, operation

    app = Flask("probe")

    @app.get("/api/v1/things/<int:thing_id>/files/<path:name>")
    @operation({200: ok("Booking")}, summary="A thing's file")
    def declared(thing_id: int, name: str):
        return ""

    @app.post("/api/v1/undeclared")
    def undeclared():
        return ""

    paths = build_paths(app.url_map.iter_rules(), app.view_functions)
    assert set(paths) == {"/things/{id}/files/{name}"}
    get = paths["/things/{id}/files/{name}"]["get"]
    assert [(p["name"], p["schema"]["type"]) for p in get["parameters"]] == [
        ("id", "integer"),
        ("name", "string"),
    ]
    assert get["security"] == [{"bearer": []}] and set(get["responses"]) == {"200", "401"}
    # the served document is the live application's, generated the same way
    served = live.app.test_client().get("/api/v1/openapi.json").get_json()
    assert served["paths"] == document(live.app)["paths"]
    assert served["paths"]["/bookings"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/BookingRequest"}
