"""Double booking is impossible: 200 concurrent HTTP requests for overlapping slots, one wins.

Runs against a real served app (werkzeug, one thread per request) on SQLite and on
PostgreSQL; on PostgreSQL the exclusion constraint is also tested on its own, with
concurrent raw inserts that bypass the booking code.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

N_REQUESTS = 200


@pytest.fixture
def served(world):
    server = make_server("127.0.0.1", 0, world.app, threaded=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def _post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_200_concurrent_overlapping_requests_yield_one_booking(world, served):
    tokens = []
    for name, project_id in (("alice", world.project_id), ("mallory", world.other_project_id)):
        status, body = _post(
            f"{served}/api/v1/tokens", {"username": name, "password": world.password}
        )
        assert status == 201
        tokens.append((body["token"], project_id))
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=48)
    barrier = threading.Barrier(N_REQUESTS)

    def attempt(i: int) -> int:
        token, project_id = tokens[i % 2]
        start = base + timedelta(minutes=i)  # every pair of requested slots overlaps
        body = {
            "instrument_id": "glacios1",
            "project_id": project_id,
            "start": start.isoformat(),
            "end": (start + timedelta(hours=4)).isoformat(),
        }
        barrier.wait(60)
        return _post(f"{served}/api/v1/bookings", body, token)[0]

    with ThreadPoolExecutor(N_REQUESTS) as pool:
        statuses = Counter(pool.map(attempt, range(N_REQUESTS)))
    assert statuses == {201: 1, 409: N_REQUESTS - 1}, statuses
    with world.app.extensions["cryofac.engine"].connect() as conn:
        held = conn.execute(
            sa.text("SELECT count(*) FROM bookings WHERE instrument_id = 'glacios1'")
        ).scalar()
    assert held == 1


@pytest.mark.postgres
def test_exclusion_constraint_alone_stops_overlaps(world, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the exclusion constraint is PostgreSQL's")
    engine = sa.create_engine(database_url, pool_size=20)
    base = datetime.now(UTC) + timedelta(days=3)
    insert = sa.text(
        "INSERT INTO bookings (instrument_id, project_id, user_id, start_at, end_at, status,"
        " note, created_at) VALUES ('krios1', :p, :u, :s, :e, :status, '', now())"
    )
    barrier = threading.Barrier(20)

    def raw(i: int) -> str:
        start = base + timedelta(minutes=7 * i)
        params = {
            "p": world.project_id,
            "u": world.users["alice"],
            "s": start,
            "e": start + timedelta(hours=24),
            "status": "confirmed" if i % 2 else "pending",
        }
        barrier.wait(30)
        try:
            with engine.begin() as conn:
                conn.execute(insert, params)
        except sa.exc.IntegrityError as exc:
            assert "ex_bookings_no_overlap" in str(exc.orig)
            return "refused"
        except sa.exc.OperationalError as exc:
            # two inserts each waiting on the other's tuple while checking the
            # constraint: PostgreSQL aborts one of them (the other goes on)
            assert "deadlock detected" in str(exc.orig)
            return "refused"
        return "inserted"

    with ThreadPoolExecutor(20) as pool:
        outcomes = Counter(pool.map(raw, range(20)))
    assert outcomes == {"inserted": 1, "refused": 19}
    # cancelled bookings do not hold the slot
    with engine.begin() as conn:
        conn.execute(
            insert,
            {
                "p": world.project_id,
                "u": world.users["alice"],
                "s": base,
                "e": base + timedelta(hours=24),
                "status": "cancelled",
            },
        )
    engine.dispose()
