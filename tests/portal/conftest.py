"""Portal fixtures: a migrated database on each backend, the facility loaded, known users."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portal import create_app
from portal import db as portal_db
from portal.domain import accounts, projects
from portal.domain.facility import load_facility_into_db
from portal.models import Project, User

PASSWORD = "correct horse battery"


@dataclass
class Facility:
    """Handles on the seeded world: users by name, the active project, a foreign project."""

    app: object
    password: str
    users: dict[str, int]
    project_id: int
    other_project_id: int

    def db(self):
        return self.app.extensions["cryofac.sessionmaker"]()

    def token(self, client, username: str) -> dict[str, str]:
        response = client.post(
            "/api/v1/tokens", json={"username": username, "password": self.password}
        )
        assert response.status_code == 201, response.get_json()
        return {"Authorization": f"Bearer {response.get_json()['token']}"}

    def book(self, client, headers, instrument_id, start, end, project_id=None, **extra):
        """``POST /api/v1/bookings`` (the project: the active one unless named); the
        response."""
        body = {
            "instrument_id": instrument_id,
            "project_id": self.project_id if project_id is None else project_id,
            "start": start,
            "end": end,
            **extra,
        }
        return client.post("/api/v1/bookings", json=body, headers=headers)

    def login(self, client, username: str, password: str | None = None, **kwargs):
        """Log in through the form; the response."""
        return login(client, username, self.password if password is None else password, **kwargs)


def book_ok(client, headers, project_id, start: datetime, instrument="glacios1", hours=4.0):
    """Book ``hours`` from ``start`` through the API; the booking (201 asserted)."""
    response = client.post(
        "/api/v1/bookings",
        json={
            "instrument_id": instrument,
            "project_id": project_id,
            "start": start.isoformat(),
            "end": (start + timedelta(hours=hours)).isoformat(),
        },
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(client, username: str, password: str, **kwargs):
    """Log in through the form (its CSRF token read from the page); the response."""
    form = {"csrf_token": csrf(client, "/login"), "username": username, "password": password}
    return client.post("/login", data=form, **kwargs)


def csrf(client, url: str) -> str:
    """The CSRF token of the form on page ``url``."""
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def make_app(database_url: str, **extra):
    config = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret",
        "TESTING": True,
        "PASSWORD_TIME_COST": 1,
        "PASSWORD_MEMORY_KIB": 256,
    }
    config.update(extra)
    return create_app(config)


def seed_world(app) -> Facility:
    """Users of every role, an active project (with allocations and training), another project."""
    from cryofac.config import load_facility

    hasher = app.extensions["cryofac.hasher"]
    with app.extensions["cryofac.sessionmaker"]() as db:
        load_facility_into_db(db, load_facility())
        users: dict[str, User] = {}
        for name, role in (
            ("admin", "admin"),
            ("staff", "staff"),
            ("tech", "technician"),
            ("pi", "pi"),
            ("alice", "researcher"),
            ("otherpi", "pi"),
            ("mallory", "researcher"),
            ("untrained", "researcher"),
        ):
            users[name] = accounts.create_user(db, hasher, name, PASSWORD, role)
        staff = users["staff"]

        def active_project(code: str, pi: User, members: list[User]) -> Project:
            project = projects.create_project(db, pi, code, f"Project {code}")
            for member in members:
                projects.add_member(db, pi, project, member)
            for state in ("submitted", "approved", "active"):
                projects.change_state(db, pi if state == "submitted" else staff, project, state)
            for kind, hours in (
                ("microscope", 500.0),
                ("vitrification_robot", 40.0),
                ("glow_discharger", 20.0),
            ):
                projects.set_allocation(db, staff, project, kind, hours)
            return project

        project = active_project("P-1", users["pi"], [users["alice"], users["untrained"]])
        other = active_project("P-2", users["otherpi"], [users["mallory"]])
        for name in ("pi", "alice", "otherpi", "mallory"):
            for instrument in ("krios1", "glacios1", "vitrobot1", "glowdischarge1"):
                projects.grant_training(db, staff, users[name], instrument)
        db.commit()
        return Facility(app, PASSWORD, {k: v.id for k, v in users.items()}, project.id, other.id)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    portal_db.upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def sqlite_world_template(tmp_path_factory) -> tuple[Path, Facility]:
    """A migrated, seeded SQLite file, built once and copied for each test (speed)."""
    path = tmp_path_factory.mktemp("portal-template") / "world.sqlite3"
    url = f"sqlite:///{path}"
    portal_db.upgrade(url)
    app = make_app(url)
    facility = seed_world(app)
    app.extensions["cryofac.engine"].dispose()
    return path, facility


@pytest.fixture
def world(database_url: str, request):
    if database_url.startswith("sqlite:///"):
        template, seeded = request.getfixturevalue("sqlite_world_template")
        shutil.copyfile(template, database_url.removeprefix("sqlite:///"))
        app = make_app(database_url)
        facility = Facility(
            app, seeded.password, dict(seeded.users), seeded.project_id, seeded.other_project_id
        )
    else:
        portal_db.upgrade(database_url)
        app = make_app(database_url)
        facility = seed_world(app)
    yield facility
    app.extensions["cryofac.engine"].dispose()


@pytest.fixture
def client(world):
    return world.app.test_client()


def make_slot(hours_from_now: float, duration_h: float) -> tuple[str, str]:
    """ISO 8601 (start, end) on the hour, ``hours_from_now`` ahead."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now + timedelta(hours=hours_from_now)
    return start.isoformat(), (start + timedelta(hours=duration_h)).isoformat()


@pytest.fixture
def slot():
    return make_slot
