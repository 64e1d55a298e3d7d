"""Concurrent conflicting decisions: approve + cancel, approve + reject, approve + approve,
then rebooking the freed slots, through a real threaded server on both backends.

Each decision locks and re-reads its booking, so the second of two conflicting requests
sees the first's outcome (409), never a 500; a cancelled booking's session is aborted
with it; no two live sessions overlap (the database refuses it too); and the audit log
ends in the state the rows are in.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from portal.models import AcqSession, AuditEntry, Booking
from tests.portal.test_concurrency import _post, served  # noqa: F401 (fixture)

ROUNDS = 4  # of each pair


def _request(method: str, url: str, token: str, body: dict | None = None) -> int:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _token(served_url: str, world, name: str) -> str:
    status, body = _post(
        f"{served_url}/api/v1/tokens", {"username": name, "password": world.password}
    )
    assert status == 201
    return body["token"]


def _overlapping_live_sessions(conn) -> int:
    live = "('scheduled', 'ready', 'acquiring', 'processing')"
    return conn.execute(
        sa.text(
            "SELECT count(*) FROM sessions a JOIN sessions b ON a.id < b.id"
            " AND a.instrument_id = b.instrument_id AND a.start_at < b.end_at"
            f" AND b.start_at < a.end_at WHERE a.state IN {live} AND b.state IN {live}"
        )
    ).scalar()


def test_conflicting_decisions_then_rebooking_stay_consistent(world, served):  # noqa: F811
    decision_races(world, served)
    assert_final_state_consistent(world)


def decision_races(world, served: str, rounds: int = ROUNDS) -> None:  # noqa: F811
    """``rounds`` of approve + cancel, approve + reject and approve + approve on pending
    Krios bookings, each pair fired at once at ``served``; then every freed slot rebooked
    and approved. Asserts the statuses (one decision wins, never a 500)."""
    alice, staff = _token(served, world, "alice"), _token(served, world, "staff")
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=5)
    slots = [base + timedelta(hours=30 * k) for k in range(3 * rounds)]

    def book(start: datetime) -> tuple[int, dict]:
        body = {
            "instrument_id": "krios1",
            "project_id": world.project_id,
            "start": start.isoformat(),
            "end": (start + timedelta(hours=24)).isoformat(),
        }
        return _post(f"{served}/api/v1/bookings", body, alice)

    approve = ("POST", "/decision", staff, {"approve": True})
    reject = ("POST", "/decision", staff, {"approve": False})
    cancel = ("DELETE", "", alice, None)
    pairs = [(approve, cancel)] * rounds + [(approve, reject)] * rounds
    pairs += [(approve, approve)] * rounds
    outcomes: list[tuple[str, int, int]] = []
    for slot, (first, second) in zip(slots, pairs, strict=True):
        status, booking = book(slot)
        assert status == 201 and booking["status"] == "pending", booking
        barrier = threading.Barrier(2)

        def fire(action, booking_id=booking["id"], barrier=barrier) -> int:
            method, suffix, token, body = action
            barrier.wait(30)
            url = f"{served}/api/v1/bookings/{booking_id}{suffix}"
            return _request(method, url, token, body)

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(fire, (first, second))
        kind = "cancel" if second is cancel else "reject" if second is reject else "approve"
        outcomes.append((kind, a, b))

    statuses = Counter(s for _, a, b in outcomes for s in (a, b))
    assert 500 not in statuses, outcomes
    for kind, a, b in outcomes:
        if kind == "cancel":  # approve first then cancel (200, 204), or cancel first (409, 204)
            assert (a, b) in {(200, 204), (409, 204)}, outcomes
        else:  # exactly one decision wins
            assert sorted((a, b)) == [200, 409], outcomes

    # rebook every freed slot (cancelled or rejected), and approve the new bookings
    with world.db() as db:
        freed = db.scalars(
            sa.select(Booking).where(Booking.status.in_(("cancelled", "rejected")))
        ).all()
    assert len(freed) >= rounds
    for old in freed:
        status, booking = book(old.start_at)
        assert status == 201, booking
        url = f"{served}/api/v1/bookings/{booking['id']}/decision"
        assert _request("POST", url, staff, {"approve": True}) == 200


def assert_final_state_consistent(world) -> None:
    """No two live sessions overlap; the audit log's last word on every booking and
    session is its state; every confirmed booking has a scheduled session, a cancelled
    one an aborted session, and no booking two sessions."""
    with world.app.extensions["cryofac.engine"].connect() as conn:
        assert _overlapping_live_sessions(conn) == 0
    with world.db() as db:
        bookings = db.scalars(sa.select(Booking)).all()
        all_sessions = db.scalars(sa.select(AcqSession)).all()
        audit = db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
    sessions = {s.booking_id: s for s in all_sessions}
    assert len(sessions) == len(all_sessions)  # never two for one booking (approve + approve)
    last = {}
    for entry in audit:
        if entry.after is not None:
            last[(entry.entity, entry.entity_id)] = entry.after
    for booking in bookings:
        assert last[("booking", str(booking.id))]["status"] == booking.status
        session = sessions.get(booking.id)
        if booking.status == "confirmed":
            assert session is not None and session.state == "scheduled"
        elif session is not None:  # confirmed, then cancelled: its session went with it
            assert booking.status == "cancelled" and session.state == "aborted"
        if session is not None:
            assert last[("session", str(session.id))]["state"] == session.state
    # one session per booking that was ever confirmed (approved, or confirmed at once)
    ever_confirmed = [b for b in bookings if b.status == "confirmed" or b.id in sessions]
    assert len(sessions) == len(ever_confirmed)


def test_the_database_refuses_overlapping_live_sessions(world):
    """Bypassing the booking code: the exclusion constraint (PostgreSQL) or the triggers
    (SQLite) refuse a second live session over the same time; an aborted one does not
    count, and reviving it over a live one is refused too."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=9)
    engine = world.app.extensions["cryofac.engine"]

    def insert(conn, offset_h: float, state: str) -> int:
        s = start + timedelta(hours=offset_h)
        values = {
            "instrument_id": "krios1",
            "project_id": world.project_id,
            "user_id": world.users["alice"],
            "start_at": s,
            "end_at": s + timedelta(hours=24),
        }
        booking_id = conn.execute(
            sa.insert(Booking).values(status="cancelled", note="", **values)
        ).inserted_primary_key[0]
        values.pop("user_id")
        return conn.execute(
            sa.insert(AcqSession).values(booking_id=booking_id, state=state, **values)
        ).inserted_primary_key[0]

    with engine.begin() as conn:
        insert(conn, 0, "scheduled")
        aborted = insert(conn, 12, "aborted")  # overlaps, but is not live
        insert(conn, 24, "scheduled")  # adjacent: [start, end) do not overlap
    refused = pytest.raises(sa.exc.IntegrityError, match="ex_sessions_no_overlap")
    with refused, engine.begin() as conn:
        insert(conn, 6, "ready")
    refused = pytest.raises(sa.exc.IntegrityError, match="ex_sessions_no_overlap")
    with refused, engine.begin() as conn:
        conn.execute(
            sa.update(AcqSession).where(AcqSession.id == aborted).values(state="scheduled")
        )
    with engine.connect() as conn:
        assert _overlapping_live_sessions(conn) == 0
