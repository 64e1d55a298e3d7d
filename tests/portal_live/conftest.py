"""A migrated SQLite portal with two projects, each with a session whose run folder exists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.portal.conftest import Facility
from tests.portal_live.runfolder_fixture import make_run


@dataclass
class LiveWorld(Facility):
    """The seeded portal (:class:`tests.portal.conftest.Facility`) with a session of each
    project whose run folder exists."""

    session_id: int = 0
    other_session_id: int = 0
    run_dir: Path = Path()

    def outbox(self, kind: str | None = None) -> list:
        """The outbox rows (of ``kind``), oldest first."""
        from portal.domain.outbox import messages

        with self.db() as db:
            return messages(db, kind)

    def run_worker_jobs(self, evaluate_alarms: bool = False):
        """One round of ``cryofac portal worker``'s periodic jobs (no delivery)."""
        from portal.worker import WorkerOptions, run_jobs

        options = WorkerOptions(evaluate_alarms=evaluate_alarms)
        return run_jobs(self.app.extensions["cryofac.sessionmaker"], options)

    def login(self, client, username: str) -> None:
        response = client.post("/login", data={"username": username, "password": self.password})
        assert response.status_code == 302, response.data[:300]


def add_session(
    db,
    project_id: int,
    user_id: int,
    run_dir: Path | None,
    instrument="krios1",
    starts_in_h: float = -2.0,
):
    """A confirmed booking and its session (``processing``), ``starts_in_h`` from now;
    live sessions on one instrument may not overlap."""
    from portal.models import AcqSession, Booking

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=starts_in_h)
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


def build_world(
    tmp_path: Path, realistic: bool = False, url: str | None = None, **config
) -> LiveWorld:
    """A migrated portal (SQLite under ``tmp_path`` unless ``url``) with seeded users and
    two run folders."""
    from portal import db as portal_db
    from tests.portal.conftest import make_app, seed_world

    url = url or f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    portal_db.upgrade(url)
    settings = {
        "WTF_CSRF_ENABLED": False,
        "DOWNLOAD_CACHE_DIR": str(tmp_path / "cache"),
        "SERVER_NAME": "portal.test",
    }
    settings.update(config)
    app = make_app(url, **{k: v for k, v in settings.items() if v is not None})
    facility = seed_world(app)
    with app.extensions["cryofac.sessionmaker"]() as db:
        from portal.models import User

        for user in db.query(User):
            user.email = f"{user.username}@lab.test"
        db.commit()
    if realistic:
        run_dir = make_run(tmp_path / "runs" / "s1", n_movies=240, realistic=True)
    else:
        run_dir = make_run(tmp_path / "runs" / "s1")
    other_dir = make_run(tmp_path / "runs" / "s2", n_movies=5, failed=())
    with app.extensions["cryofac.sessionmaker"]() as db:
        s1 = add_session(db, facility.project_id, facility.users["alice"], run_dir)
        s2 = add_session(
            db, facility.other_project_id, facility.users["mallory"], other_dir, "glacios1"
        )
        db.commit()
        ids = (s1.id, s2.id)
    return LiveWorld(
        app,
        facility.password,
        facility.users,
        facility.project_id,
        facility.other_project_id,
        ids[0],
        ids[1],
        run_dir,
    )


@pytest.fixture
def live(tmp_path) -> LiveWorld:
    world = build_world(tmp_path)
    yield world
    world.app.extensions["cryofac.engine"].dispose()


@pytest.fixture
def live_any_db(tmp_path, database_url) -> LiveWorld:
    """Like ``live``, once on SQLite and once on PostgreSQL."""
    world = build_world(tmp_path, url=database_url)
    yield world
    world.app.extensions["cryofac.engine"].dispose()


@pytest.fixture
def client(live):
    return live.app.test_client()


def seed_environment(world: LiveWorld, history_h: float = 2.0, evaluate: bool = True) -> int:
    """Two hours of simulated Krios-room readings ending now with an air-conditioning
    failure, alarms evaluated every 5 minutes; returns the id of a firing alarm
    (``evaluate=False``: readings only, no alarm evaluated; returns 0)."""
    import instrument_env.db
    from instrument_env import alarms
    from instrument_env.ingest import ingest_readings
    from instrument_env.limits import load_env_config
    from instrument_env.sim import EnvSimulator, fault_at

    instrument_env.db.upgrade(world.app.config["DATABASE_URL"])
    config = load_env_config()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=2)
    fault = fault_at(
        "ac_failure", now - timedelta(minutes=50), 60, room="krios-room", magnitude=4.0
    )
    rooms = ["krios-room", "screening-room", "prep-lab"]
    sim = EnvSimulator(config, seed=1, rooms=rooms, noise=0.5)
    with world.db() as db:
        if history_h > 2:  # older history at one reading per 5 min, for the 24 h charts
            history = EnvSimulator(config, seed=2, rooms=rooms, noise=0.5)
            sparse = [
                r
                for batch in history.batches(now - timedelta(hours=history_h), start, step_s=300)
                for r in batch
                if datetime.fromisoformat(r["ts"]).timestamp() % 300 < 10
            ]
            ingest_readings(db, sparse, source="sim", config=config, now=start)
            db.commit()
        readings = sim.readings(start, now, [fault])
        result = ingest_readings(db, readings, source="sim", config=config, now=now)
        assert result.rejected == []
        db.commit()
        if not evaluate:
            return 0
        for minutes in range(50, -1, -5):  # the alarm engine runs every few minutes
            alarms.evaluate(db, now - timedelta(minutes=minutes), config)
            db.commit()
        firing = [a for a in alarms.list_alarms(db, "firing") if a.room == "krios-room"]
        assert firing, "the AC failure should fire an alarm"
        return firing[0].id
