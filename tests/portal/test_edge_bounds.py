"""Malformed and out-of-range input gets a 4xx with a message, never a 500.

The inputs that gave 500 (ids beyond 2^31, NUL bytes, years 1 and 9999, ``week=9999-12-31``,
JSON nested 5,000 deep, CR/LF in ``next=``) and the booking horizon, one by one; a body
over the size limit refused before it is read; then a property-based fuzz (Hypothesis)
over every route of the application, as staff with a cookie and a bearer token.
"""

from __future__ import annotations

import os
import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.portal.test_concurrency import served  # noqa: F401 (fixture)

BIG = 2**31  # one past the largest id


def _staff(world, client) -> dict[str, str]:
    world.app.config["WTF_CSRF_ENABLED"] = False
    response = client.post("/login", data={"username": "staff", "password": world.password})
    assert response.status_code == 302
    return world.token(client, "staff")


def _booking_body(world, start: str, end: str, **extra) -> dict:
    return {"instrument_id": "glacios1", "project_id": world.project_id, "start": start,
            "end": end, **extra}  # fmt: skip


def test_each_known_bad_input_is_a_4xx_with_a_message(world, client):
    token = _staff(world, client)
    soon = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
    start, end = soon.isoformat(), (soon + timedelta(hours=4)).isoformat()
    json_cases = [
        ("/api/v1/bookings", {**_booking_body(world, start, end), "project_id": BIG}),
        ("/api/v1/bookings", {**_booking_body(world, start, end), "project_id": -5}),
        ("/api/v1/bookings", {**_booking_body(world, start, end), "for_booking_id": 2**63}),
        ("/api/v1/bookings", _booking_body(world, start, end, note="a\u0000b")),
        ("/api/v1/bookings", _booking_body(world, "0001-01-01T00:00:00+14:00", end)),
        ("/api/v1/bookings", _booking_body(world, start, "9999-12-31T23:59:59-12:00")),
        ("/api/v1/bookings", _booking_body(world, "0001-01-01T00:00:00", end)),
        ("/api/v1/waitlist", _booking_body(world, start, "9999-12-31T23:59:59+00:00")),
        ("/api/v1/bookings/1/decision", {"approve": True, "reason": "\x00"}),
        ("/api/v1/tokens", {"username": "a\x00", "password": "b"}),
    ]
    for path, body in json_cases:
        response = client.post(path, json=body, headers=token)
        assert 400 <= response.status_code < 500, (path, body, response.status_code)
        assert response.get_json()["error"]["message"], (path, body)
    deep = "[" * 5000 + "]" * 5000
    response = client.post(
        "/api/v1/bookings", data=deep, headers={**token, "Content-Type": "application/json"}
    )
    assert (
        response.status_code == 400
        and "nests 5000 levels" in response.get_json()["error"]["message"]
    )
    for method, path in (
        ("get", f"/api/v1/bookings/{BIG}"),
        ("delete", f"/api/v1/bookings/{2**70}"),
        ("get", f"/api/v1/sessions/{BIG}"),
        ("get", f"/projects/{BIG}"),
        ("post", f"/staff/bookings/{BIG}/decision"),
        ("post", f"/bookings/{BIG}/cancel"),
        ("get", "/calendar/glacios1?week=9999-12-31"),
        ("get", "/calendar/glacios1?week=0001-01-01"),
        ("get", "/calendar/glacios1?week=2026-01-01%00"),
        ("get", "/api/v1/bookings?start=9999-12-31T23:59:59-12:00"),
        ("get", f"/api/v1/bookings?limit={2**80}"),
        ("get", "/admin/audit?page=99999999999999999999"),
    ):
        headers = token if path.startswith("/api/") else {}
        response = getattr(client, method)(path, headers=headers)
        assert (
            200 <= response.status_code < 500
            and response.status_code != 200
            or (path.startswith("/admin"))
        ), (path, response.status_code)
    for form in (
        {
            "instrument_id": "glacios1",
            "project_id": str(BIG),
            "start": "2030-01-01T09:00",
            "end": "2030-01-01T12:00",
        },  # fmt: skip
        {
            "instrument_id": "glacios1",
            "project_id": "1",
            "start": "0001-01-01T00:00",
            "end": "9999-12-31T23:00",
        },  # fmt: skip
        {"instrument_id": "glacios1\x00", "project_id": "1", "start": "x", "end": "y"},
    ):
        response = client.post("/bookings/new", data=form)
        assert 400 <= response.status_code < 500, (form, response.status_code)
    response = client.post("/staff/training", data={"user_id": str(2**40), "instrument_id": "x"})
    assert 300 <= response.status_code < 500
    # CR/LF in next= is not echoed into the Location header
    anonymous = world.app.test_client()
    response = anonymous.post(
        "/login?next=/%0d%0aSet-Cookie:%20x=1",
        data={"username": "staff", "password": world.password},
    )
    assert response.status_code == 302 and "\n" not in response.headers["Location"]
    assert "Set-Cookie: x" not in str(response.headers)


def test_booking_beyond_the_horizon_is_refused_with_422(world, client):
    token = world.token(client, "alice")
    far = datetime(9999, 11, 1, 9, tzinfo=UTC)
    response = client.post(
        "/api/v1/bookings",
        json=_booking_body(world, far.isoformat(), (far + timedelta(hours=4)).isoformat()),
        headers=token,
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["rule"] == "horizon"
    edge = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=366)
    response = client.post(
        "/api/v1/bookings",
        json=_booking_body(world, edge.isoformat(), (edge + timedelta(hours=4)).isoformat()),
        headers=token,
    )
    message = response.get_json()["error"]["message"]
    assert response.status_code == 422 and "365 days ahead" in message
    assert "CST (Asia/Shanghai))" in message and "+00:00" not in message  # the facility's zone
    inside = edge - timedelta(days=2)
    response = client.post(
        "/api/v1/bookings",
        json=_booking_body(world, inside.isoformat(), (inside + timedelta(hours=4)).isoformat()),
        headers=token,
    )
    assert response.status_code == 201, response.get_json()
    for page in ("/staff/", f"/projects/{world.project_id}", "/bookings/mine"):
        assert client.get(page).status_code in (200, 302)


def test_the_horizon_is_configurable(world, client, tmp_path):
    """facility.yaml validates it; a Glacios that books 30 days ahead refuses 40, takes 20."""
    import yaml

    from cryofac.config import load_facility
    from cryofac.errors import CryofacError
    from portal.domain.facility import load_facility_into_db

    facility = load_facility()
    glacios = next(i for i in facility["instruments"] if i["id"] == "glacios1")
    path = tmp_path / "facility.yaml"
    glacios["booking"]["horizon_days"] = -1
    path.write_text(yaml.safe_dump(facility))
    with pytest.raises(CryofacError, match="horizon_days"):
        load_facility(path)
    glacios["booking"]["horizon_days"] = 30
    path.write_text(yaml.safe_dump(facility))
    with world.db() as db:
        load_facility_into_db(db, load_facility(path))
        db.commit()
    token = world.token(client, "alice")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for days, status in ((40, 422), (20, 201)):
        start = now + timedelta(days=days)
        body = _booking_body(world, start.isoformat(), (start + timedelta(hours=4)).isoformat())
        response = client.post("/api/v1/bookings", json=body, headers=token)
        assert response.status_code == status, response.get_json()


def test_a_body_over_the_limit_is_refused_unread(world, served):  # noqa: F811
    """A client announces 64 MiB and sends 1 KiB: the 413 comes back at once, from the
    Content-Length alone (the server would otherwise wait for the rest)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(served)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode()
            + b"{" * 1024
        )
        chunks = []
        while chunk := conn.recv(65536):  # the server closes after its answer
            chunks.append(chunk)
        reply = b"".join(chunks).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "too_large" in reply


# -- property-based fuzz over every route -------------------------------------------------

STRANGE = st.sampled_from(
    [
        "",
        "\x00",
        "a\r\nb",
        "9999-12-31",
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+14:00",
        "2026-02-30T10:00:00+00:00",
        "2026-12-24T10:00:00",
        "1e309",
        "NaN",
        "-1",
        str(2**31),
        str(2**64),
        "krios1",
        "glacios1",
        "../../etc/passwd",
        "true",
        "%00",
        "<script>",
        "é" * 300,
    ]
)
SCALAR = st.one_of(
    STRANGE,
    st.text(string.printable + "\x00é", max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
KEYS = st.sampled_from(
    [
        "instrument_id", "project_id", "start", "end", "for_booking_id", "note", "approve",
        "reason", "state", "username", "password", "user_id", "expires", "hours",
        "instrument_kind", "code", "title", "abstract", "comment", "week", "limit", "page",
        "entity", "next", "span", "override_gate", "raw_dir", "run_dir",
    ]
)  # fmt: skip
JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
SKIPPED_ROUTES = {"static", "auth.logout", "api.revoke_token"}  # would end the fuzz's log-in


def _routes(app) -> list[tuple[str, str, dict]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED_ROUTES:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, rule.rule, dict(rule._converters)))
    return found


def _path_value(converter) -> st.SearchStrategy[str]:
    from werkzeug.routing import IntegerConverter

    if isinstance(converter, IntegerConverter):
        return st.one_of(
            st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=2**70)
        ).map(str)
    return st.one_of(STRANGE, st.text(string.ascii_letters + "._-", min_size=1, max_size=12))


def _fuzz(world, client, token, data) -> None:
    from urllib.parse import quote

    method, rule, converters = data.draw(st.sampled_from(_routes(world.app)))
    path = rule
    for name, converter in converters.items():
        value = data.draw(_path_value(converter))
        path = path.replace(f"<{converter.__class__.__name__.lower()}:{name}>", value)
        for spelled in ("int", "path", "string"):
            path = path.replace(f"<{spelled}:{name}>", quote(value, safe=""))
        path = path.replace(f"<{name}>", quote(value, safe=""))
    query = data.draw(st.dictionaries(KEYS, SCALAR.map(str), max_size=3))
    kwargs: dict = {"query_string": query, "headers": dict(token)}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        if data.draw(st.booleans()):
            kwargs["json"] = data.draw(JSON)
        else:
            kwargs["data"] = data.draw(st.dictionaries(KEYS, SCALAR.map(str), max_size=5))
    response = client.open(path, method=method, **kwargs)
    assert response.status_code < 500, (method, path, kwargs, response.status_code)


@pytest.mark.slow
def test_no_route_answers_500_to_anything(world, client):
    import instrument_env.db

    instrument_env.db.upgrade(world.app.config["DATABASE_URL"])  # the environment's routes too
    token = _staff(world, client)

    @settings(
        max_examples=int(os.environ.get("CRYOFAC_FUZZ_EXAMPLES", "150")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(data=st.data())
    def fuzz(data) -> None:
        _fuzz(world, client, token, data)

    fuzz()
