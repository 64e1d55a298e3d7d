"""Project pages: my projects, one project (members, allocation used, bookings), new project."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from flask import Blueprint, g, redirect, render_template, request, url_for
from sqlalchemy.orm import Session

from portal.db import get_db
from portal.domain import actions, permissions
from portal.domain import bookings as booking_rules
from portal.domain import projects as project_rules
from portal.domain.errors import InvalidInput, PortalError
from portal.models import Booking, Instrument, Project, User
from portal.views.calendar import facility_tz
from portal.views.common import act, login_required, visible_or_404

bp = Blueprint("projects", __name__, url_prefix="/projects")


@bp.get("/")
@login_required
def index():
    db = get_db()
    query = sa.select(Project).order_by(Project.code)
    if not permissions.is_operator(g.user):
        query = query.where(Project.id.in_(permissions.project_ids_of(db, g.user) or {-1}))
    return render_template("projects.html", projects=db.scalars(query).all())


@bp.get("/<int:project_id>")
@login_required
def show(project_id: int):
    db = get_db()
    project = visible_or_404(permissions.visible_project, project_id)
    usage = [
        (a.instrument_kind, a.hours, booking_rules.used_hours(db, project.id, a.instrument_kind))
        for a in project.allocations
    ]
    bookings = db.scalars(
        sa.select(Booking).where(Booking.project_id == project.id).order_by(Booking.start_at)
    ).all()
    return render_template(
        "project.html",
        project=project,
        usage=usage,
        bookings=bookings,
        transitions=actions.project_transitions(g.user, project),
        instrument_kinds=sorted(set(db.scalars(sa.select(Instrument.kind)))),
        tz=facility_tz(),
    )


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    error = None
    if request.method == "POST":
        db = get_db()
        try:
            project = project_rules.create_project(
                db,
                g.user,
                request.form.get("code", ""),
                request.form.get("title", ""),
                request.form.get("abstract", ""),
            )
            db.commit()
        except PortalError as exc:
            db.rollback()
            error = exc.message
        else:
            return redirect(url_for("projects.show", project_id=project.id))
    return render_template("project_new.html", error=error, form=request.form), (
        400 if error else 200
    )


def _on_project(project_id: int, action: Callable[[Session, Project], str | None]):
    """Run ``action`` on a project the user can see (404 otherwise) and commit; a refusal
    is rolled back and shown; back to the project's page either way."""
    project = visible_or_404(permissions.visible_project, project_id)
    return act(lambda: action(get_db(), project), "projects.show", project_id=project_id)


@bp.post("/<int:project_id>/state")
@login_required
def change_state(project_id: int):
    def change(db: Session, project: Project) -> str:
        form = request.form
        project_rules.change_state(
            db, g.user, project, form.get("state", ""), form.get("reason", "")
        )
        return f"Project {project.code} is now {project.state}."

    return _on_project(project_id, change)


@bp.post("/<int:project_id>/members")
@login_required
def add_member(project_id: int):
    def add(db: Session, project: Project) -> None:
        username = request.form.get("username", "")
        member = db.scalar(sa.select(User).where(User.username == username))
        if member is None:
            raise PortalError("no such user")
        project_rules.add_member(db, g.user, project, member)

    return _on_project(project_id, add)


@bp.post("/<int:project_id>/allocation")
@login_required
def set_allocation(project_id: int):
    def allocate(db: Session, project: Project) -> None:
        try:
            hours = float(request.form.get("hours", ""))
        except ValueError:
            raise InvalidInput("hours must be a number") from None
        kind = request.form.get("instrument_kind", "")
        project_rules.set_allocation(db, g.user, project, kind, hours)

    return _on_project(project_id, allocate)
