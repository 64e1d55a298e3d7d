"""Projects (access proposals), their members and allocations, and training records.

States: draft → submitted → approved → active → closed. The PI submits; staff
approve (or send back to draft), activate and close. Bookings need an *active* project.
"""

from __future__ import annotations

import math
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.domain import audit, permissions
from portal.domain.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from portal.models import Allocation, Instrument, Project, TrainingRecord, User, utcnow

#: state -> {next state: who may make the move ("pi" or "staff")}
PROJECT_TRANSITIONS: dict[str, dict[str, str]] = {
    "draft": {"submitted": "pi"},
    "submitted": {"approved": "staff", "draft": "staff"},
    "approved": {"active": "staff", "closed": "staff"},
    "active": {"closed": "staff"},
    "closed": {},
}


def create_project(db: Session, pi: User, code: str, title: str, abstract: str = "") -> Project:
    """A new draft project led by ``pi`` (a PI, or staff creating one for a PI)."""
    if pi.role not in ("pi", "staff", "admin"):
        raise Forbidden("only a PI can lead a project")
    code, title = code.strip(), title.strip()
    if not code or len(code) > 40 or not title:
        raise InvalidInput("a project needs a code (1-40 characters) and a title")
    if db.scalar(sa.select(Project.id).where(Project.code == code)) is not None:
        raise InvalidInput(f"project code {code!r} is taken")
    project = Project(code=code, title=title[:300], abstract=abstract, pi_id=pi.id, state="draft")
    db.add(project)
    db.flush()
    audit.record(db, pi, "create", "project", project.id, after={"code": code, "state": "draft"})
    return project


def change_state(
    db: Session, actor: User, project: Project, to_state: str, reason: str = ""
) -> None:
    allowed = PROJECT_TRANSITIONS.get(project.state, {})
    if to_state not in allowed:
        raise InvalidTransition(f"project {project.code} is {project.state}; not → {to_state}")
    who = allowed[to_state]
    if who == "pi" and not (project.pi_id == actor.id or permissions.is_staff(actor)):
        raise Forbidden(f"only the PI of {project.code} may do that")
    if who == "staff":
        permissions.require_staff(actor)
    before = {"state": project.state}
    project.state = to_state
    audit.record(
        db, actor, "transition", "project", project.id, before, {"state": to_state}, reason
    )


def set_allocation(
    db: Session, staff: User, project: Project, instrument_kind: str, hours: float
) -> None:
    """Staff set a project's hours on one kind of instrument (``microscope``, ...)."""
    permissions.require_staff(staff)
    if not math.isfinite(hours) or hours < 0:
        raise InvalidInput("an allocation is a number of hours, 0 or more")
    kind_exists = sa.select(Instrument.id).where(Instrument.kind == instrument_kind).limit(1)
    if db.scalar(kind_exists) is None:
        raise InvalidInput(f"no instrument of kind {instrument_kind!r}")
    row = next((a for a in project.allocations if a.instrument_kind == instrument_kind), None)
    before = {"hours": row.hours} if row else None
    if row is None:
        project.allocations.append(Allocation(instrument_kind=instrument_kind, hours=hours))
    else:
        row.hours = hours
    audit.record(
        db,
        staff,
        "allocate",
        "project",
        project.id,
        before,
        {"instrument_kind": instrument_kind, "hours": hours},
    )


def add_member(db: Session, actor: User, project: Project, member: User) -> None:
    if not (project.pi_id == actor.id or permissions.is_staff(actor)):
        raise Forbidden(f"only the PI of {project.code} or staff may add members")
    if member in project.members:
        return
    project.members.append(member)
    audit.record(db, actor, "add_member", "project", project.id, after={"user_id": member.id})


def grant_training(
    db: Session,
    staff: User,
    user: User,
    instrument_id: str,
    expires_at: datetime | None = None,
) -> TrainingRecord:
    """Staff record that ``user`` is trained on an instrument (until ``expires_at``)."""
    permissions.require_staff(staff)
    if db.get(Instrument, instrument_id) is None:
        raise NotFound(f"instrument {instrument_id!r} not found")
    record = TrainingRecord(
        user_id=user.id,
        instrument_id=instrument_id,
        granted_by_id=staff.id,
        granted_at=utcnow(),
        expires_at=expires_at,
    )
    db.add(record)
    db.flush()
    audit.record(
        db,
        staff,
        "grant",
        "training",
        record.id,
        after={"user_id": user.id, "instrument_id": instrument_id, "expires_at": expires_at},
    )
    return record


def revoke_training(db: Session, staff: User, record: TrainingRecord) -> None:
    permissions.require_staff(staff)
    record.revoked_at = utcnow()
    audit.record(
        db, staff, "revoke", "training", record.id, after={"revoked_at": record.revoked_at}
    )
