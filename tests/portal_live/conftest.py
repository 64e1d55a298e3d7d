"""A migrated SQLite portal with two projects, each with a session whose run folder exists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.portal_live.runfolder_fixture import make_run


@dataclass
class LiveWorld:
    app: object
    password: str
    users: dict[str, int]
    project_id: int
    other_project_id: int
    session_id: int
    other_session_id: int
    run_dir: Path

    def db(self):
        return self.app.extensions["cryofac.sessionmaker"]()

    def token(self, client, username: str) -> dict[str, str]:
        response = client.post(
            "/api/v1/tokens", json={"username": username, "password": self.password}
        )
        assert response.status_code == 201, response.get_json()
        return {"Authorization": f"Bearer {response.get_json()['token']}"}

    def login(self, client, username: str) -> None:
        response = client.post("/login", data={"username": username, "password": self.password})
        assert response.status_code == 302, response.data[:300]


def add_session(db, project_id: int, user_id: int, run_dir: Path | None, instrument="krios1"):
    from portal.models import AcqSession, Booking

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    booking = Booking(
        instrument_id=instrument,
        project_id=project_id,
        user_id=user_id,
        start_at=start,
        end_at=start + timedelta(hours=24),
        status="confirmed",
    )
    db.add(booking)
    db.flush()
    session = AcqSession(
        booking_id=booking.id,
        instrument_id=instrument,
        project_id=project_id,
        state="processing",
        run_dir=str(run_dir) if run_dir else None,
        started_at=start,
    )
    db.add(session)
    db.flush()
    return session


@pytest.fixture
def live(tmp_path) -> LiveWorld:
    from portal import db as portal_db
    from tests.portal.conftest import make_app, seed_world

    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    portal_db.upgrade(url)
    app = make_app(
        url,
        WTF_CSRF_ENABLED=False,
        DOWNLOAD_CACHE_DIR=str(tmp_path / "cache"),
        NOTIFY_OUTBOX=str(tmp_path / "outbox.jsonl"),
        SERVER_NAME="portal.test",
    )
    facility = seed_world(app)
    with app.extensions["cryofac.sessionmaker"]() as db:
        from portal.models import User

        for user in db.query(User):
            user.email = f"{user.username}@lab.test"
        db.commit()
    run_dir = make_run(tmp_path / "runs" / "s1")
    other_dir = make_run(tmp_path / "runs" / "s2", n_movies=5, failed=())
    with app.extensions["cryofac.sessionmaker"]() as db:
        s1 = add_session(db, facility.project_id, facility.users["alice"], run_dir)
        s2 = add_session(
            db, facility.other_project_id, facility.users["mallory"], other_dir, "glacios1"
        )
        db.commit()
        ids = (s1.id, s2.id)
    yield LiveWorld(
        app,
        facility.password,
        facility.users,
        facility.project_id,
        facility.other_project_id,
        ids[0],
        ids[1],
        run_dir,
    )
    app.extensions["cryofac.engine"].dispose()


@pytest.fixture
def client(live):
    return live.app.test_client()
