"""Who may see and do what. Plain functions of (user, object); no Flask.

Roles: ``researcher`` and ``pi`` act within their projects; ``technician`` runs the
instruments and sessions; ``staff`` approve projects, bookings and training, and act on
any booking; ``admin`` can do everything staff can, and read the audit log.
Objects a user may not see are reported as *not found* (404) so their existence leaks
nothing; actions on visible objects that the user may not take are *forbidden* (403).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.domain.errors import Forbidden, NotFound
from portal.models import AcqSession, Booking, Project, User, project_members

STAFF_ROLES = frozenset({"staff", "admin"})
OPERATOR_ROLES = frozenset({"staff", "admin", "technician"})


def is_staff(user: User) -> bool:
    return user.role in STAFF_ROLES


def is_operator(user: User) -> bool:
    return user.role in OPERATOR_ROLES


def is_admin(user: User) -> bool:
    return user.role == "admin"


def project_ids_select(user_id: int | sa.ColumnElement[int]) -> sa.CompoundSelect:
    """The ids of the projects a user belongs to (as PI or member), as a subquery to embed.

    ``user_id``: the user's id, or a bind parameter for it.
    """
    member = sa.select(project_members.c.project_id).where(project_members.c.user_id == user_id)
    led = sa.select(Project.id).where(Project.pi_id == user_id)
    return sa.union(member, led)


def project_ids_of(db: Session, user: User) -> set[int]:
    """Projects ``user`` belongs to (as PI or member)."""
    return set(db.scalars(project_ids_select(user.id)).all())


def is_project_member(db: Session, user: User, project: Project) -> bool:
    return project.pi_id == user.id or project.id in project_ids_of(db, user)


def can_view_project(db: Session, user: User, project: Project) -> bool:
    return is_operator(user) or is_project_member(db, user, project)


def require_staff(user: User) -> None:
    if not is_staff(user):
        raise Forbidden("staff only")


def require_operator(user: User) -> None:
    if not is_operator(user):
        raise Forbidden("staff or technicians only")


def require_admin(user: User) -> None:
    if not is_admin(user):
        raise Forbidden("administrators only")


def visible_project(db: Session, user: User, project_id: int) -> Project:
    """The project, or :class:`NotFound` when it does not exist or ``user`` may not see it."""
    project = db.get(Project, project_id)
    if project is None or not can_view_project(db, user, project):
        raise NotFound(f"project {project_id} not found")
    return project


def visible_booking(db: Session, user: User, booking_id: int) -> Booking:
    booking = db.get(Booking, booking_id)
    if booking is None or not (is_operator(user) or is_project_member(db, user, booking.project)):
        raise NotFound(f"booking {booking_id} not found")
    return booking


def visible_session(db: Session, user: User, session_id: int) -> AcqSession:
    session = db.get(AcqSession, session_id)
    if session is None:
        raise NotFound(f"session {session_id} not found")
    project = db.get(Project, session.project_id)
    if not (is_operator(user) or is_project_member(db, user, project)):
        raise NotFound(f"session {session_id} not found")
    return session


def require_can_book_for(
    db: Session, user: User, project: Project, member: bool | None = None
) -> None:
    """Members book for their project; staff may book for any project.

    ``member``: whether ``user`` is on the project's member list, when the caller has
    already read it (the PI is a member either way); None: read it here.
    """
    if is_staff(user):
        return
    if member is None:
        allowed = is_project_member(db, user, project)
    else:
        allowed = project.pi_id == user.id or member
    if not allowed:
        raise Forbidden(f"you are not a member of project {project.code}")


def can_cancel(db: Session, user: User, booking: Booking) -> bool:
    """The booker, the project's PI, or staff."""
    if is_staff(user):
        return True
    return booking.user_id == user.id or booking.project.pi_id == user.id
