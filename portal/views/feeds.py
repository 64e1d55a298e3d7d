"""Calendar feeds: ``/ical/TOKEN.ics`` per user and per instrument, and a page listing them.

Calendar programs cannot log in, so the feed URL carries a signed token naming the
user it was issued to (see :mod:`portal.ical`); the feed shows what that user may see
at the time of each fetch: their own bookings in full, other projects' bookings on an
instrument as *Booked* only (staff and technicians see everything), maintenance blocks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, render_template

from portal.db import get_db
from portal.domain.permissions import is_operator, project_ids_of
from portal.ical import CalendarEvent, FeedTokenError, feed_token, read_feed_token, render_calendar
from portal.links import external_url
from portal.models import HOLDING_BOOKING_STATES, Booking, Instrument, MaintenanceBlock, User
from portal.views.common import login_required

bp = Blueprint("ical", __name__)

#: How far back and ahead a feed reaches (days).
PAST_DAYS = 60
FUTURE_DAYS = 365


def _host() -> str:
    return current_app.config.get("ICAL_UID_DOMAIN", "cryofac")


def booking_event(booking: Booking, detailed: bool) -> CalendarEvent:
    instrument = booking.instrument
    if detailed:
        summary = f"{instrument.name}: {booking.project.code} ({booking.user.full_name})"
        description = (
            f"Project {booking.project.code}: {booking.project.title}\n"
            f"Booked by {booking.user.full_name}; status {booking.status}."
        )
    else:
        summary, description = f"{instrument.name}: booked", ""
    return CalendarEvent(
        uid=f"booking-{booking.id}@{_host()}",
        start=booking.start_at,
        end=booking.end_at,
        summary=summary,
        location=instrument.room.name if instrument.room else "",
        description=description,
        status="CONFIRMED" if booking.status == "confirmed" else "TENTATIVE",
        last_modified=booking.decided_at or booking.created_at,
    )


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=PAST_DAYS), now + timedelta(days=FUTURE_DAYS)


def _holding_bookings(db, which) -> list[Booking]:
    """Bookings matching ``which`` that hold their slot within the feed's window."""
    start, end = _window()
    return db.scalars(
        sa.select(Booking)
        .where(
            which,
            Booking.status.in_(HOLDING_BOOKING_STATES),
            Booking.end_at > start,
            Booking.start_at < end,
        )
        .order_by(Booking.start_at)
    ).all()


def user_feed(db, user: User) -> tuple[str, list[CalendarEvent]]:
    bookings = _holding_bookings(db, Booking.user_id == user.id)
    return f"cryofac: {user.full_name or user.username}", [booking_event(b, True) for b in bookings]


def instrument_feed(db, user: User, instrument: Instrument) -> tuple[str, list[CalendarEvent]]:
    start, end = _window()
    mine = project_ids_of(db, user)
    operator = is_operator(user)
    bookings = _holding_bookings(db, Booking.instrument_id == instrument.id)
    events = [booking_event(b, operator or b.project_id in mine) for b in bookings]
    blocks = db.scalars(
        sa.select(MaintenanceBlock).where(
            MaintenanceBlock.instrument_id == instrument.id,
            MaintenanceBlock.end_at > start,
            MaintenanceBlock.start_at < end,
        )
    ).all()
    events += [
        CalendarEvent(
            uid=f"maintenance-{m.id}@{_host()}",
            start=m.start_at,
            end=m.end_at,
            summary=f"{instrument.name}: maintenance",
            description=m.reason or "",
        )
        for m in blocks
    ]
    events.sort(key=lambda e: e.start)
    return f"cryofac: {instrument.name}", events


@bp.get("/ical/<token>.ics")
def feed(token: str):
    try:
        grant = read_feed_token(current_app.config["SECRET_KEY"], token)
    except FeedTokenError as exc:
        return Response(f"error: {exc}\n", status=404, mimetype="text/plain")
    db = get_db()
    user = db.get(User, grant.user_id)
    if user is None or not user.active or grant.generation != user.feed_generation:
        return Response("error: not found\n", status=404, mimetype="text/plain")
    if grant.kind == "user":
        name, events = user_feed(db, user)
    else:
        instrument = db.get(Instrument, grant.instrument_id)
        if instrument is None:
            return Response("error: not found\n", status=404, mimetype="text/plain")
        name, events = instrument_feed(db, user, instrument)
    response = Response(render_calendar(name, events), mimetype="text/calendar")
    response.headers["Content-Disposition"] = 'inline; filename="cryofac.ics"'
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


def feed_url(kind: str, user: User, instrument_id: str | None = None) -> str:
    """The private feed address of ``user`` (its current generation; see EXTERNAL_URL)."""
    token = feed_token(
        current_app.config["SECRET_KEY"], kind, user.id, instrument_id, user.feed_generation
    )
    return external_url("ical.feed", token=token)


@bp.get("/calendar/feeds")
@login_required
def feeds():
    db = get_db()
    instruments = db.scalars(
        sa.select(Instrument).where(Instrument.active.is_(True)).order_by(Instrument.name)
    ).all()
    return render_template(
        "runs/feeds.html",
        my_feed=feed_url("user", g.user),
        instrument_feeds=[(i, feed_url("instrument", g.user, i.id)) for i in instruments],
    )
