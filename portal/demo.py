"""Demo data: one user per role, a lab, an active project with allocations, training."""

from __future__ import annotations

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from portal.domain import accounts, projects
from portal.models import Instrument, Lab, Project, User

DEMO_USERS = (
    ("admin", "admin", "Ada Admin"),
    ("staff", "staff", "Sam Staff"),
    ("tech", "technician", "Tess Technician"),
    ("pi", "pi", "Pat Investigator"),
    ("researcher", "researcher", "Rui Researcher"),
    ("outsider", "researcher", "Olu Outsider"),
)


def seed(db: Session, hasher: PasswordHasher, password: str) -> list[str]:
    """Idempotent: existing demo users and the demo project are left as they are."""
    users: dict[str, User] = {}
    for username, role, full_name in DEMO_USERS:
        user = db.scalar(sa.select(User).where(User.username == username))
        if user is None:
            user = accounts.create_user(
                db, hasher, username, password, role, full_name, f"{username}@example.org"
            )
        users[username] = user
    staff = users["staff"]
    if db.scalar(sa.select(Lab).where(Lab.name == "Investigator lab")) is None:
        db.add(Lab(name="Investigator lab", pi_id=users["pi"].id, members=[users["researcher"]]))
    project = db.scalar(sa.select(Project).where(Project.code == "MSB-2026-001"))
    if project is None:
        project = projects.create_project(
            db, users["pi"], "MSB-2026-001", "Structure of a coral light-harvesting complex"
        )
        projects.add_member(db, users["pi"], project, users["researcher"])
        projects.change_state(db, users["pi"], project, "submitted")
        projects.change_state(db, staff, project, "approved")
        projects.change_state(db, staff, project, "active")
        hours = {"microscope": 168.0, "vitrification_robot": 40.0, "glow_discharger": 20.0}
        for kind, h in hours.items():
            projects.set_allocation(db, staff, project, kind, h)
        for instrument in db.scalars(sa.select(Instrument)).all():
            for name in ("pi", "researcher"):
                projects.grant_training(db, staff, users[name], instrument.id)
    db.flush()
    return [u for u, _, _ in DEMO_USERS]
