"""Week calendar per instrument, my bookings, and the book / cancel forms."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from portal.db import get_db
from portal.domain import bookings as booking_rules
from portal.domain import permissions
from portal.domain.actions import holds_overlapping
from portal.domain.bounds import bounded_date
from portal.domain.errors import BookingConflict, BookingRuleViolation, PortalError
from portal.domain.timezones import facility_zone
from portal.models import HOLDING_BOOKING_STATES, Booking, Instrument, Project, WaitlistEntry
from portal.views.common import act, login_required, visible_or_404

bp = Blueprint("calendar", __name__)


def facility_tz() -> ZoneInfo:
    """The facility's time zone (calendars only; everything is stored in UTC)."""
    tz = current_app.extensions.get("cryofac.tz")
    if tz is None:
        tz = current_app.extensions["cryofac.tz"] = load_facility_tz(
            current_app.config.get("FACILITY_CONFIG_DIR"),
            current_app.config.get("FACILITY_TIMEZONE"),
        )
    return tz


def load_facility_tz(config_dir: str | None, override: str | None = None) -> ZoneInfo:
    """The facility's zone (:func:`portal.domain.timezones.facility_zone`)."""
    return facility_zone(config_dir, override)


def _instruments():
    return (
        get_db()
        .scalars(sa.select(Instrument).where(Instrument.active.is_(True)).order_by(Instrument.id))
        .all()
    )


@bp.get("/")
@login_required
def index():
    instruments = _instruments()
    if not instruments:
        return render_template("empty.html")
    return redirect(url_for("calendar.week", instrument_id=instruments[0].id))


class _Slot(NamedTuple):
    """One calendar entry (attributes, not dict keys: Jinja looks attributes up first)."""

    start: str
    end: str
    kind: str
    booking: Booking | None


class _Day(NamedTuple):
    date: date
    entries: list[_Slot]


_LISTED_INSTRUMENTS = (
    sa.select(Instrument)
    .where(sa.or_(Instrument.active.is_(True), Instrument.id == sa.bindparam("instrument_id")))
    .order_by(Instrument.id)
)


@bp.get("/calendar/<instrument_id>")
@login_required
def week(instrument_id: str):
    db = get_db()
    # the instrument shown (active or not) and the active ones for the tabs, in one query
    listed = db.scalars(_LISTED_INSTRUMENTS, {"instrument_id": instrument_id}).all()
    instrument = next((i for i in listed if i.id == instrument_id), None)
    if instrument is None:
        abort(404)
    tz = facility_tz()
    try:
        day = date.fromisoformat(request.args["week"]) if "week" in request.args else None
    except ValueError:
        day = None
    if day is not None:
        bounded_date(day, "week")  # 400 beyond the years a booking may have
    day = day or datetime.now(tz).date()
    monday = day - timedelta(days=day.weekday())
    start = datetime.combine(monday, time(0), tz)
    end = start + timedelta(days=7)
    visible = {
        (b.start_at, b.end_at): b
        for b in booking_rules.visible_bookings(db, g.user, instrument.id, start, end, 500)
        if b.status in HOLDING_BOOKING_STATES
    }
    busy = booking_rules.busy_intervals(db, instrument.id, start, end)
    days = []
    for i in range(7):
        d0 = start + timedelta(days=i)
        d1 = d0 + timedelta(days=1)
        entries = [
            _Slot(
                max(s, d0).astimezone(tz).strftime("%H:%M"),
                e.astimezone(tz).strftime("%H:%M") if e < d1 else "24:00",
                kind,
                # who holds a slot is shown only to those who may read that booking
                visible.get((s, e)) if kind == "booked" else None,
            )
            for s, e, kind in busy
            if s < d1 and e > d0
        ]
        days.append(_Day(d0.date(), entries))
    return render_template(
        "calendar.html",
        instrument=instrument,
        instruments=[i for i in listed if i.active],
        days=days,
        prev_week=(monday - timedelta(days=7)).isoformat(),
        next_week=(monday + timedelta(days=7)).isoformat(),
        tz=tz,
    )


@bp.get("/bookings/mine")
@login_required
def mine():
    db = get_db()
    rows = db.scalars(
        sa.select(Booking).where(Booking.user_id == g.user.id).order_by(Booking.start_at.desc())
    ).all()
    waiting = db.scalars(
        sa.select(WaitlistEntry)
        .where(WaitlistEntry.user_id == g.user.id, WaitlistEntry.state.in_(("waiting", "offered")))
        .order_by(WaitlistEntry.start_at)
    ).all()
    from portal.domain.actions import cancellable_ids

    return render_template(
        "my_bookings.html",
        bookings=rows,
        waiting=waiting,
        tz=facility_tz(),
        cancellable=cancellable_ids(db, g.user, rows, datetime.now(UTC)),
    )


@bp.post("/waitlist")
@login_required
def join_waitlist():
    def join() -> str:
        form = request.form
        tz = facility_tz()
        booking_rules.join_waitlist(
            get_db(),
            g.user,
            form.get("instrument_id", ""),
            _int(form.get("project_id"), "project"),
            _local_time(form.get("start", ""), tz, "start", form.get("start_fold", "")),
            _local_time(form.get("end", ""), tz, "end", form.get("end_fold", "")),
        )
        return "You are on the waitlist; you will be offered the slot if it is freed."

    return act(join, "calendar.mine")


def _bookable_projects():
    db = get_db()
    query = sa.select(Project).where(Project.state == "active").order_by(Project.code)
    if not permissions.is_staff(g.user):
        ids = permissions.project_ids_of(db, g.user)
        query = query.where(Project.id.in_(ids or {-1}))
    return db.scalars(query).all()


@bp.route("/bookings/new", methods=["GET", "POST"])
@login_required
def new():
    form = request.form if request.method == "POST" else request.args
    error = rule = None
    status = 200
    waitlist = False
    if request.method == "POST":
        tz = facility_tz()
        db = get_db()
        try:
            start = _local_time(form.get("start", ""), tz, "start", form.get("start_fold", ""))
            end = _local_time(form.get("end", ""), tz, "end", form.get("end_fold", ""))
            for_booking = form.get("for_booking_id", "").strip()
            booking = booking_rules.create_booking(
                db,
                g.user,
                form.get("instrument_id", ""),
                _int(form.get("project_id"), "project"),
                start,
                end,
                for_booking_id=_int(for_booking, "microscope booking") if for_booking else None,
                note=form.get("note", ""),
            )
            db.commit()
        except PortalError as exc:
            db.rollback()
            error, status = exc.message, exc.status
            if isinstance(exc, BookingRuleViolation):
                rule, error = exc.rule, exc.plain
            if isinstance(exc, BookingConflict) and "maintenance" not in exc.message:
                # offered only for a slot someone else holds
                waitlist = not holds_overlapping(
                    db, g.user, form.get("instrument_id", ""), start, end
                )
        else:
            flash(
                f"Booked {booking.instrument_id} ({booking.status})."
                if booking.status == "confirmed"
                else f"Requested {booking.instrument_id}; waiting for staff approval."
            )
            return redirect(url_for("calendar.mine"))
    return render_template(
        "book.html",
        instruments=_instruments(),
        projects=_bookable_projects(),
        form=form,
        error=error,
        rule=rule,
        conflict=waitlist,
        tz=facility_tz(),
    ), status


@bp.post("/bookings/<int:booking_id>/cancel")
@login_required
def cancel(booking_id: int):
    booking = visible_or_404(permissions.visible_booking, booking_id)

    def cancel_booking() -> str:
        booking_rules.cancel_booking(get_db(), g.user, booking)
        return f"Booking {booking_id} cancelled."

    return act(cancel_booking, "calendar.mine")


def _local_time(value: str, tz: ZoneInfo, name: str, fold: str = "") -> datetime:
    """A form's wall-clock time in the facility zone as UTC (gaps refused, repeats asked),
    within the portal's time bounds."""
    from portal.domain.bounds import bounded_time
    from portal.domain.timezones import resolve_local

    return bounded_time(resolve_local(value[:64], tz, name, fold), name)


def _int(value, name: str) -> int:
    from portal.domain.bounds import bounded_id
    from portal.domain.errors import InvalidInput

    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidInput(f"choose a {name}")
    return bounded_id(value, name)
