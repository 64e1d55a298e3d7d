"""Database round trips of the three hot requests (issue 7's latency bar).

The week calendar, the bookings list and booking creation are the requests the portal
serves most; every statement is a round trip and CPU in the one server process. These
bounds are what the requests need today: a new query on one of these paths should be a
deliberate choice (raise the bound here and say why), not an accident.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

import pytest
import sqlalchemy as sa

from portal.views.calendar import facility_tz

# statements per request on each backend (BEGIN not counted). SQLite has no advisory
# locks, reads the longest booking duration in a query of its own, and inserts the two
# audit entries of a booking one by one.
LIMITS = {
    "calendar": {"postgresql": 4, "sqlite": 5},
    "bookings_get": {"postgresql": 2, "sqlite": 3},
    "bookings_post": {"postgresql": 9, "sqlite": 8},
}


@contextmanager
def statements(app):
    """The SQL statements the application sends while the block runs (BEGIN excluded)."""
    engine = app.extensions["cryofac.engine"]
    sent: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("username", ["alice", "pi", "staff"])
def test_hot_requests_stay_within_their_statement_budget(world, client, slot, username):
    """A member, a PI and staff: cookie and bearer token both sent, as a browser-based
    client of the benchmark does."""
    backend = world.app.extensions["cryofac.engine"].dialect.name
    assert world.login(client, username).status_code == 302
    headers = world.token(client, username)
    start, end = slot(72, 4)
    created = world.book(client, headers, "glacios1", start, end)
    assert created.status_code == 201, created.get_json()

    with world.app.app_context():
        local_day = datetime.fromisoformat(start).astimezone(facility_tz()).date()
    with statements(world.app) as sent:
        page = client.get(f"/calendar/glacios1?week={local_day.isoformat()}")
    assert page.status_code == 200 and "P-1" in page.get_data(as_text=True)
    assert len(sent) <= LIMITS["calendar"][backend], sent

    query = f"instrument_id=glacios1&start={start}&end={end}".replace("+", "%2B")
    with statements(world.app) as sent:
        listed = client.get(f"/api/v1/bookings?{query}", headers=headers)
    assert listed.status_code == 200 and [b["id"] for b in listed.get_json()] == [
        created.get_json()["id"]
    ]
    assert len(sent) <= LIMITS["bookings_get"][backend], sent

    start, end = slot(96, 4)
    with statements(world.app) as sent:
        again = world.book(client, headers, "glacios1", start, end)
    assert again.status_code == 201, again.get_json()
    assert len(sent) <= LIMITS["bookings_post"][backend], sent
