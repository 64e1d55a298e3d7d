"""Which actions a person may take now, so pages offer only those (no Flask).

The rules themselves live where they are enforced (:mod:`portal.domain.bookings`,
:mod:`portal.domain.projects`); these helpers ask the same questions without changing
anything, so a button is shown exactly when pressing it would be allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.domain import permissions
from portal.domain.projects import PROJECT_TRANSITIONS
from portal.models import HOLDING_BOOKING_STATES, AcqSession, Booking, Project, User


def project_transitions(user: User, project: Project) -> list[str]:
    """The states ``user`` may move ``project`` to (PI moves for the PI, staff moves for staff)."""
    allowed = []
    for state, who in PROJECT_TRANSITIONS.get(project.state, {}).items():
        if permissions.is_staff(user) or (who == "pi" and project.pi_id == user.id):
            allowed.append(state)
    return allowed


def cancellable_ids(
    db: Session, user: User, bookings: Sequence[Booking], now: datetime
) -> set[int]:
    """Ids of ``bookings`` that ``user`` may cancel at ``now``.

    Held, cancellable by this user (booker, PI, staff), before the instrument's
    cancellation deadline unless staff, and its session (if any) not yet started.
    """
    candidates = [
        b
        for b in bookings
        if b.status in HOLDING_BOOKING_STATES and permissions.can_cancel(db, user, b)
    ]
    if not permissions.is_staff(user):
        candidates = [
            b
            for b in candidates
            if now <= b.start_at - timedelta(hours=b.instrument.cancellation_deadline_h)
        ]
    if not candidates:
        return set()
    started = set(
        db.scalars(
            sa.select(AcqSession.booking_id).where(
                AcqSession.booking_id.in_([b.id for b in candidates]),
                AcqSession.state != "scheduled",
            )
        )
    )
    return {b.id for b in candidates if b.id not in started}


def holds_overlapping(
    db: Session, user: User, instrument_id: str, start: datetime, end: datetime
) -> bool:
    """Whether ``user`` already holds a booking on the instrument overlapping ``[start, end)``
    (then the waitlist for that slot would be the user waiting for themselves)."""
    found = db.scalar(
        sa.select(Booking.id)
        .where(
            Booking.instrument_id == instrument_id,
            Booking.user_id == user.id,
            Booking.status.in_(HOLDING_BOOKING_STATES),
            Booking.start_at < end,
            Booking.end_at > start,
        )
        .limit(1)
    )
    return found is not None
