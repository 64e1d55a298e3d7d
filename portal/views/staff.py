"""Staff pages: pending approvals (bookings, projects), training, maintenance, sessions."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from portal.db import get_db
from portal.domain import bookings as booking_rules
from portal.domain import permissions
from portal.domain import projects as project_rules
from portal.domain import sessions as lifecycle
from portal.domain.errors import GateUnavailable, InvalidInput, PortalError
from portal.facility import session_gate
from portal.models import AcqSession, Booking, Instrument, Project, User
from portal.views.calendar import _local_time, facility_tz
from portal.views.common import login_required, role_gate

bp = Blueprint("staff", __name__, url_prefix="/staff")


bp.before_request(role_gate(permissions.is_operator))


@bp.get("/")
@login_required
def index():
    db = get_db()
    return render_template(
        "staff.html",
        pending=db.scalars(
            sa.select(Booking).where(Booking.status == "pending").order_by(Booking.start_at)
        ).all(),
        submitted=db.scalars(sa.select(Project).where(Project.state == "submitted")).all(),
        sessions=db.scalars(
            sa.select(AcqSession)
            .where(AcqSession.state.notin_(("complete", "aborted")))
            .order_by(AcqSession.id)
        ).all(),
        users=db.scalars(sa.select(User).order_by(User.username)).all(),
        instruments=db.scalars(sa.select(Instrument).order_by(Instrument.id)).all(),
        transitions=lifecycle.TRANSITIONS,
        tz=facility_tz(),
    )


def _done(message: str | None = None, error: PortalError | None = None):
    db = get_db()
    if error is not None:
        db.rollback()
        flash(error.message, "error")
    else:
        db.commit()
        if message:
            flash(message)
    return redirect(url_for("staff.index"))


@bp.post("/bookings/<int:booking_id>/decision")
def decide(booking_id: int):
    db = get_db()
    booking = db.get(Booking, booking_id) or abort(404)
    try:
        booking_rules.decide(
            db, g.user, booking, request.form.get("approve") == "1", request.form.get("reason", "")
        )
    except PortalError as exc:
        return _done(error=exc)
    return _done(f"Booking {booking_id} {booking.status}.")


@bp.post("/training")
def grant_training():
    db = get_db()
    user = db.get(User, _int(request.form.get("user_id"))) or abort(404)
    try:
        expires = request.form.get("expires", "").strip()
        project_rules.grant_training(
            db,
            g.user,
            user,
            request.form.get("instrument_id", ""),
            _local_time(expires, facility_tz(), "expires") if expires else None,
        )
    except PortalError as exc:
        return _done(error=exc)
    return _done(f"{user.username} trained on {request.form.get('instrument_id')}.")


@bp.post("/maintenance")
def add_maintenance():
    db = get_db()
    tz = facility_tz()
    try:
        booking_rules.add_maintenance(
            db,
            g.user,
            request.form.get("instrument_id", ""),
            _local_time(request.form.get("start", ""), tz, "start"),
            _local_time(request.form.get("end", ""), tz, "end"),
            request.form.get("reason", ""),
        )
    except PortalError as exc:
        return _done(error=exc)
    return _done("Maintenance block added.")


@bp.post("/sessions/<int:session_id>/transition")
def transition(session_id: int):
    db = get_db()
    session = db.get(AcqSession, session_id) or abort(404)
    try:
        lifecycle.transition(
            db,
            g.user,
            session,
            request.form.get("state", ""),
            reason=request.form.get("reason", ""),
            override_gate=request.form.get("override_gate") == "1",
            gate=session_gate(),
        )
        folders = {k: request.form.get(k, "").strip() for k in ("raw_dir", "run_dir")}
        if any(folders.values()):
            lifecycle.set_folders(
                db, g.user, session, folders["raw_dir"] or None, folders["run_dir"] or None
            )
    except GateUnavailable:
        raise  # a 503 page with the reasons (portal.api.common), not a flash
    except PortalError as exc:
        return _done(error=exc)
    return _done(f"Session {session_id} is now {session.state}.")


def _int(value) -> int:
    from portal.domain.bounds import bounded_id

    if value is None:
        raise InvalidInput("not a number")
    return bounded_id(value, "user")
