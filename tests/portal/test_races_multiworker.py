"""The races of issue 20 behind the production server: PostgreSQL, ``cryofac portal
serve --workers 2 --threads 8`` (gunicorn, two processes with their own pools).

1,000 concurrent requests for pairwise-overlapping slots get exactly one 201 and 999
409s; then approve + cancel, approve + reject and approve + approve fired together, and
rebooking the freed slots, never give a 500; no two live sessions and no two holding
bookings overlap; the audit log ends in the state the rows are in.
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

from portal.domain import accounts
from portal.models import User
from tests.portal.served import serving
from tests.portal.test_decision_races import assert_final_state_consistent, decision_races

N_RACE = 1000


def _book(url: str, token: str, body: dict, barrier: threading.Barrier) -> int:
    request = urllib.request.Request(
        f"{url}/api/v1/bookings",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    barrier.wait(120)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_1000_way_race_and_decision_races_behind_the_multiworker_server(world, database_url):
    with world.db() as db:
        users = {u.username: u for u in db.scalars(sa.select(User))}
        tokens = [
            (accounts.issue_token(db, users["alice"], 1), world.project_id),
            (accounts.issue_token(db, users["mallory"], 1), world.other_project_id),
        ]
        db.commit()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    barrier = threading.Barrier(N_RACE)

    with serving(database_url, "--workers", "2", "--threads", "8") as url:

        def attempt(i: int) -> int:
            token, project_id = tokens[i % 2]
            start = base + timedelta(seconds=7 * i)  # 1,000 slots of 4 h within 2 h: all overlap
            body = {
                "instrument_id": "glacios1",
                "project_id": project_id,
                "start": start.isoformat(),
                "end": (start + timedelta(hours=4)).isoformat(),
            }
            return _book(url, token, body, barrier)

        with ThreadPoolExecutor(N_RACE) as pool:
            statuses = Counter(pool.map(attempt, range(N_RACE)))
        assert statuses == {201: 1, 409: N_RACE - 1}, statuses

        decision_races(world, url)

    with world.app.extensions["cryofac.engine"].connect() as conn:
        overlapping = conn.execute(
            sa.text(
                "SELECT count(*) FROM bookings a JOIN bookings b ON a.id < b.id"
                " AND a.instrument_id = b.instrument_id AND a.start_at < b.end_at"
                " AND b.start_at < a.end_at"
                " WHERE a.status IN ('pending', 'confirmed')"
                " AND b.status IN ('pending', 'confirmed')"
            )
        ).scalar()
        glacios = conn.execute(
            sa.text("SELECT count(*) FROM bookings WHERE instrument_id = 'glacios1'")
        ).scalar()
    assert overlapping == 0 and glacios == 1
    assert_final_state_consistent(world)
