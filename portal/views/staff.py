"""Staff pages: pending approvals (bookings, projects), training, maintenance, sessions."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, g, render_template, request

from portal.db import get_db
from portal.domain import bookings as booking_rules
from portal.domain import permissions
from portal.domain import projects as project_rules
from portal.domain import sessions as lifecycle
from portal.domain.errors import InvalidInput
from portal.facility import session_gate
from portal.models import AcqSession, Booking, Instrument, Project, User
from portal.views.calendar import _local_time, facility_tz
from portal.views.common import act, login_required, role_gate

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


@bp.post("/bookings/<int:booking_id>/decision")
def decide(booking_id: int):
    db = get_db()
    booking = db.get(Booking, booking_id) or abort(404)

    def decide_booking() -> str:
        form = request.form
        booking_rules.decide(
            db, g.user, booking, form.get("approve") == "1", form.get("reason", "")
        )
        return f"Booking {booking_id} {booking.status}."

    return act(decide_booking, "staff.index")


@bp.post("/training")
def grant_training():
    db = get_db()
    user = db.get(User, _int(request.form.get("user_id"))) or abort(404)

    def grant() -> str:
        expires = request.form.get("expires", "").strip()
        project_rules.grant_training(
            db,
            g.user,
            user,
            request.form.get("instrument_id", ""),
            _local_time(expires, facility_tz(), "expires") if expires else None,
        )
        return f"{user.username} trained on {request.form.get('instrument_id')}."

    return act(grant, "staff.index")


@bp.post("/maintenance")
def add_maintenance():
    def add() -> str:
        tz = facility_tz()
        booking_rules.add_maintenance(
            get_db(),
            g.user,
            request.form.get("instrument_id", ""),
            _local_time(request.form.get("start", ""), tz, "start"),
            _local_time(request.form.get("end", ""), tz, "end"),
            request.form.get("reason", ""),
        )
        return "Maintenance block added."

    return act(add, "staff.index")


@bp.post("/sessions/<int:session_id>/transition")
def transition(session_id: int):
    db = get_db()
    session = db.get(AcqSession, session_id) or abort(404)

    def move() -> str:
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
        return f"Session {session_id} is now {session.state}."

    return act(move, "staff.index")


def _int(value) -> int:
    from portal.domain.bounds import bounded_id

    if value is None:
        raise InvalidInput("not a number")
    return bounded_id(value, "user")
