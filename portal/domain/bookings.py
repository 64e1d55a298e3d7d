"""Every booking rule, in one place. No Flask: functions of a database session and a user.

Rules (each violation raises :class:`BookingRuleViolation` naming the rule, HTTP 422):
``time_order`` (end after start), ``project_state`` (the project is active),
``training`` (the booker holds a valid training record for the instrument; staff are
exempt), ``min_duration`` / ``max_duration``, ``lead_time`` (start at least the
instrument's lead time from now), ``horizon`` (end at most the instrument's
``horizon_days`` ahead), ``sample_prep`` (a sample-preparation slot linked to a
microscope booking ends before that session starts, on the same project), and
``allocation`` (the project's hours on this kind of instrument are not exceeded).
Overlap with another pending or confirmed booking, or with a maintenance block, raises
:class:`BookingConflict` (409); so does cancelling after the cancellation deadline.

Concurrency: on SQLite every write transaction is serialised (``BEGIN IMMEDIATE``). On
PostgreSQL advisory locks serialise the bookings of one instrument and of one project,
and an exclusion constraint makes two overlapping held bookings on one instrument
impossible whatever the code does.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from portal.db import lock_instrument
from portal.domain import audit, outbox, permissions
from portal.domain.errors import (
    BookingConflict,
    BookingRuleViolation,
    CancellationTooLate,
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from portal.domain.timezones import hours_between, local_text
from portal.models import (
    HOLDING_BOOKING_STATES,
    AcqSession,
    Booking,
    Instrument,
    MaintenanceBlock,
    Project,
    TrainingRecord,
    User,
    WaitlistEntry,
    project_members,
    utcnow,
)

BOOKING_FIELDS = ("instrument_id", "project_id", "user_id", "start_at", "end_at", "status")


def _longest_booking_h(db: Session) -> float:
    """The longest booking any instrument allows, in hours (bounds overlap queries)."""
    if "cryofac.longest_booking_h" not in db.info:  # once per session (one request)
        longest = db.scalar(sa.select(sa.func.max(Instrument.max_duration_h)))
        db.info["cryofac.longest_booking_h"] = float(longest or 0.0)
    return db.info["cryofac.longest_booking_h"]


# The statements of the hot paths (calendar, booking list, booking creation) are built
# once per dialect and shape, with bind parameters, and executed with the values:
# building a statement and its cache key costs more CPU than running it. They hold SQL
# only, never data.

_HOUR = sa.literal_column("INTERVAL '1 hour'", sa.Interval())


def _dialect(db: Session) -> str:
    return db.get_bind().dialect.name


def _time_param(name: str) -> sa.BindParameter[datetime]:
    return sa.bindparam(name, type_=Booking.start_at.type)


def _overlap_clause(dialect: str) -> sa.ColumnElement[bool]:
    """Bookings overlapping ``[:start, :end)``, written so the (instrument, start) index is used.

    No booking is longer than the longest an instrument allows (every booking passes
    :func:`check_request_rules`), so ``start_at`` is bounded from below as well as above. Used
    for reading (calendars, lists); the write-path check :func:`check_free` is unbounded.

    On PostgreSQL the longest duration is read by the statement itself (an InitPlan,
    evaluated once; the index range scan still uses the bound), which saves a round
    trip per request; elsewhere the bound is ``:lower`` (:func:`_overlap_params`).
    """
    start, end = _time_param("start"), _time_param("end")
    if dialect == "postgresql":
        longest = sa.select(
            sa.func.coalesce(sa.func.max(Instrument.max_duration_h), 0.0)
        ).scalar_subquery()
        lower = start - _HOUR * (longest + 1)
    else:
        lower = _time_param("lower")
    return sa.and_(Booking.start_at < end, Booking.start_at > lower, Booking.end_at > start)


def _overlap_params(db: Session, dialect: str, start: datetime, end: datetime) -> dict:
    """The values of :func:`_overlap_clause`'s parameters."""
    params = {"start": start, "end": end}
    if dialect != "postgresql":
        params["lower"] = start - timedelta(hours=_longest_booking_h(db) + 1)
    return params


def _hours(value: float) -> str:
    return f"{value:g} h"


_TRAINING_QUERY = sa.select(TrainingRecord).where(
    TrainingRecord.user_id == sa.bindparam("user_id"),
    TrainingRecord.instrument_id == sa.bindparam("instrument_id"),
)


def check_request_rules(
    db: Session,
    user: User,
    instrument: Instrument,
    project: Project,
    start: datetime,
    end: datetime,
    now: datetime,
    for_booking: Booking | None = None,
    training: list[TrainingRecord] | None = None,
) -> None:
    """Every rule but the allocation: they depend on no other booking, so need no lock.

    ``training``: ``user``'s training records on the instrument, when already read.
    """
    if end <= start:
        raise BookingRuleViolation("time_order", "the end must be after the start")
    if project.state != "active":
        raise BookingRuleViolation(
            "project_state", f"project {project.code} is {project.state}, not active"
        )
    if not permissions.is_staff(user):
        records = training
        if records is None:
            params = {"user_id": user.id, "instrument_id": instrument.id}
            records = db.scalars(_TRAINING_QUERY, params).all()
        if not any(r.valid_at(start) for r in records):
            raise BookingRuleViolation(
                "training", f"{user.username} is not trained on {instrument.id}"
            )
    duration_h = hours_between(start, end)
    if duration_h < instrument.min_duration_h - 1e-9:
        raise BookingRuleViolation(
            "min_duration",
            f"{_hours(duration_h)} is shorter than the minimum "
            f"{_hours(instrument.min_duration_h)} on {instrument.id}",
        )
    if duration_h > instrument.max_duration_h + 1e-9:
        raise BookingRuleViolation(
            "max_duration",
            f"{_hours(duration_h)} is longer than the maximum "
            f"{_hours(instrument.max_duration_h)} on {instrument.id}",
        )
    if start < now + timedelta(hours=instrument.lead_time_h):
        raise BookingRuleViolation(
            "lead_time",
            f"{instrument.id} must be booked at least {_hours(instrument.lead_time_h)} ahead",
        )
    horizon = now + timedelta(days=instrument.horizon_days)
    if end > horizon:
        raise BookingRuleViolation(
            "horizon",
            f"{instrument.id} can be booked up to {instrument.horizon_days:g} days ahead "
            f"(until {local_text(horizon)})",
        )
    if for_booking is not None:
        _check_sample_prep(instrument, project, end, for_booking)


def check_allocation(
    db: Session,
    instrument: Instrument,
    project: Project,
    start: datetime,
    end: datetime,
    ignore_booking_id: int | None = None,
    allocated_h: float | None = None,
) -> None:
    """:class:`BookingRuleViolation` ``allocation`` when ``[start, end)`` exceeds what is left.

    Sums the project's held bookings, so a writer holds the project lock (:func:`_lock`)
    first. ``allocated_h``: the project's allocation on this kind, when already read.
    """
    duration_h = hours_between(start, end)
    if allocated_h is None:
        allocated_h = project.allocation_h(instrument.kind)
    used_h = used_hours(db, project.id, instrument.kind, ignore_booking_id)
    if used_h + duration_h > allocated_h + 1e-9:
        raise BookingRuleViolation(
            "allocation",
            f"project {project.code} has {_hours(allocated_h - used_h)} left of its "
            f"{_hours(allocated_h)} on {instrument.kind} instruments; "
            f"{_hours(duration_h)} requested",
        )


def _check_sample_prep(
    instrument: Instrument, project: Project, end: datetime, session_booking: Booking
) -> None:
    if not instrument.is_sample_prep:
        raise BookingRuleViolation(
            "sample_prep", "only sample-preparation slots can belong to a microscope session"
        )
    target = session_booking.instrument
    if target.is_sample_prep or session_booking.status not in HOLDING_BOOKING_STATES:
        raise BookingRuleViolation(
            "sample_prep", f"booking {session_booking.id} is not a live microscope booking"
        )
    if session_booking.project_id != project.id:
        raise BookingRuleViolation(
            "sample_prep", f"booking {session_booking.id} belongs to another project"
        )
    if end > session_booking.start_at:
        raise BookingRuleViolation(
            "sample_prep",
            f"the sample-preparation slot must end by {local_text(session_booking.start_at)}, "
            f"when microscope booking {session_booking.id} starts",
        )


@functools.cache
def _used_hours_query(dialect: str, ignoring: bool) -> sa.Select:
    if dialect == "postgresql":
        seconds = sa.func.extract("epoch", Booking.end_at - Booking.start_at)
    else:
        seconds = (sa.func.julianday(Booking.end_at) - sa.func.julianday(Booking.start_at)) * 86400
    query = (
        sa.select(sa.func.coalesce(sa.func.sum(seconds), 0.0))
        .join(Instrument, Booking.instrument_id == Instrument.id)
        .where(
            Booking.project_id == sa.bindparam("project_id"),
            Instrument.kind == sa.bindparam("kind"),
            Booking.status.in_(HOLDING_BOOKING_STATES),
        )
    )
    if ignoring:
        query = query.where(Booking.id != sa.bindparam("ignore_id"))
    return query


def used_hours(
    db: Session, project_id: int, instrument_kind: str, ignore_booking_id: int | None = None
) -> float:
    """Hours held (pending or confirmed) by a project on instruments of one kind."""
    query = _used_hours_query(_dialect(db), ignore_booking_id is not None)
    params = {"project_id": project_id, "kind": instrument_kind}
    if ignore_booking_id is not None:
        params["ignore_id"] = ignore_booking_id
    return float(db.scalar(query, params)) / 3600.0


@functools.cache
def _clash_query(ignoring: bool) -> sa.CompoundSelect:
    """At most one held booking (kind 0) and one maintenance block (kind 1) overlapping
    ``[:start, :end)`` on ``:instrument_id``: one statement, one round trip."""
    start, end = _time_param("start"), _time_param("end")
    booked = sa.select(
        sa.literal(0).label("kind"),
        Booking.start_at,
        Booking.end_at,
        sa.literal("").label("reason"),
    ).where(
        Booking.instrument_id == sa.bindparam("instrument_id"),
        Booking.status.in_(HOLDING_BOOKING_STATES),
        Booking.start_at < end,  # exact, not bounded: this check guards writes
        Booking.end_at > start,
    )
    if ignoring:
        booked = booked.where(Booking.id != sa.bindparam("ignore_id"))
    blocked = sa.select(
        sa.literal(1).label("kind"),
        MaintenanceBlock.start_at,
        MaintenanceBlock.end_at,
        MaintenanceBlock.reason,
    ).where(
        MaintenanceBlock.instrument_id == sa.bindparam("instrument_id"),
        MaintenanceBlock.start_at < end,
        MaintenanceBlock.end_at > start,
    )
    return sa.union_all(
        sa.select(booked.limit(1).subquery()), sa.select(blocked.limit(1).subquery())
    )


def check_free(
    db: Session,
    instrument_id: str,
    start: datetime,
    end: datetime,
    ignore_booking_id: int | None = None,
) -> None:
    """:class:`BookingConflict` when ``[start, end)`` overlaps a held booking or maintenance."""
    params = {"instrument_id": instrument_id, "start": start, "end": end}
    if ignore_booking_id is not None:
        params["ignore_id"] = ignore_booking_id
    found = {
        row.kind: row for row in db.execute(_clash_query(ignore_booking_id is not None), params)
    }
    clash = found.get(0)
    if clash is not None:
        raise BookingConflict(
            f"{instrument_id} is already booked from {local_text(clash.start_at)} "
            f"to {local_text(clash.end_at)}"
        )
    block = found.get(1)
    if block is not None:
        raise BookingConflict(
            f"{instrument_id} is down for maintenance from {local_text(block.start_at)} "
            f"to {local_text(block.end_at)}" + (f" ({block.reason})" if block.reason else "")
        )


def _lock(db: Session, instrument_id: str | None, project_id: int | None) -> None:
    """Serialise the writes of a booking (project, then instrument) or of a maintenance
    block (instrument only). Always in this order, so two writers cannot deadlock; a
    booking takes the project lock, checks its allocation, then takes the instrument
    lock (``_lock(db, None, project)`` then ``_lock(db, instrument, None)``).

    The instrument lock queues bookings of one instrument so that the loser of a race
    sees the winner in :func:`check_free` (409 with a message) instead of meeting the
    exclusion constraint mid-insert, where PostgreSQL may pick it as a deadlock victim;
    it also keeps maintenance blocks, which no constraint covers, apart from bookings.
    The project lock keeps two bookings of one project from both fitting the same
    remaining allocation.

    Both are held to the end of the transaction, and every booking of an instrument
    waits for the one holding its lock (on a server, with a thread each), so only what
    needs the lock runs under it: see :func:`create_booking`.
    """
    if project_id is not None:
        lock_instrument(db, f"project:{project_id}")
    if instrument_id is not None:
        lock_instrument(db, instrument_id)


def create_booking(
    db: Session,
    user: User,
    instrument_id: str,
    project_id: int,
    start: datetime,
    end: datetime,
    for_booking_id: int | None = None,
    note: str = "",
    now: datetime | None = None,
) -> Booking:
    """Book ``[start, end)`` on an instrument for a project, after checking every rule.

    Instruments that require approval get a *pending* booking (it holds the slot until
    staff decide); staff bookings and other instruments are *confirmed*. A confirmed
    microscope booking gets its acquisition session (state ``scheduled``).
    The caller commits.

    Locks are taken as late as possible: the rules that depend on no other booking (and
    the reads of the allocation and of the booker's waitlist entries) come first; the
    project lock covers the allocation sum; the instrument lock covers only the overlap
    check and the inserts, flushed together, until the commit.
    """
    now = now or utcnow()
    subjects = _booking_subjects(db, user, instrument_id, project_id, start, end)
    instrument, project = subjects.instrument, subjects.project
    if instrument is None or not instrument.active:
        raise NotFound(f"instrument {instrument_id!r} not found")
    if project is None:
        raise NotFound(f"project {project_id} not found")
    permissions.require_can_book_for(db, user, project, member=subjects.member)
    for_booking = None
    if for_booking_id is not None:
        for_booking = db.get(Booking, for_booking_id)
        if for_booking is None or for_booking.project_id != project.id:
            raise BookingRuleViolation(
                "sample_prep", f"microscope booking {for_booking_id} not found in this project"
            )
    check_request_rules(
        db, user, instrument, project, start, end, now, for_booking, subjects.training
    )
    allocated_h = project.allocation_h(instrument.kind)
    offers = _offers_for(db, user, instrument.id, start, end) if subjects.offers else []
    _lock(db, None, project.id)
    check_allocation(db, instrument, project, start, end, allocated_h=allocated_h)
    _lock(db, instrument.id, None)
    check_free(db, instrument.id, start, end)
    status = (
        "pending"
        if instrument.requires_approval and not permissions.is_staff(user)
        else "confirmed"
    )
    booking = Booking(
        instrument_id=instrument.id,
        project_id=project.id,
        user_id=user.id,
        start_at=start,
        end_at=end,
        status=status,
        for_booking_id=for_booking_id,
        note=note[:2000],
        created_at=now,
    )
    db.add(booking)
    session = _new_session(db, booking) if status == "confirmed" else None
    if status == "confirmed":  # the notice commits with the booking, or neither does
        outbox.notify_booking(db, "booking_confirmed", booking, user)
    _flush_or_conflict(db, instrument.id)  # the booking, its session and its notice
    audit.record(db, user, "create", "booking", booking.id, after=_snapshot(booking))
    if session is not None:
        _audit_session(db, user, session)
    _accept_offers(db, user, offers)
    return booking


_OVERLAP_CONSTRAINTS = ("ex_bookings_no_overlap", "ex_sessions_no_overlap")


def _flush_or_conflict(db: Session, instrument_id: str) -> None:
    """Flush; an overlap refused by the database itself (PostgreSQL's exclusion
    constraints, SQLite's session triggers) becomes :class:`BookingConflict` (409)."""
    try:
        db.flush()
    except sa.exc.IntegrityError as exc:
        db.rollback()
        if any(name in str(exc.orig) for name in _OVERLAP_CONSTRAINTS):
            raise BookingConflict(f"{instrument_id} is already booked at that time") from None
        raise


def lock_booking(db: Session, booking_id: int) -> Booking:
    """Re-read booking ``booking_id`` and lock its row to the end of the transaction.

    PostgreSQL: ``SELECT ... FOR UPDATE``, so a concurrent decision or cancellation waits
    and then sees this one's outcome; SQLite: ``BEGIN IMMEDIATE`` already serialises
    every writing transaction. The returned object holds the row's committed values.
    """
    booking = db.scalar(
        sa.select(Booking)
        .where(Booking.id == booking_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if booking is None:
        raise NotFound(f"booking {booking_id} not found")
    return booking


def lock_session_of(db: Session, booking_id: int) -> AcqSession | None:
    """The acquisition session of a booking, its row locked (see :func:`lock_booking`)."""
    return db.scalar(
        sa.select(AcqSession)
        .where(AcqSession.booking_id == booking_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


_OFFER_CRITERIA = (  # the booker's waitlist entries that a booking of [:start, :end) takes
    WaitlistEntry.user_id == sa.bindparam("user_id"),
    WaitlistEntry.instrument_id == sa.bindparam("instrument_id"),
    WaitlistEntry.state.in_(("waiting", "offered")),
    WaitlistEntry.start_at < _time_param("end"),
    WaitlistEntry.end_at > _time_param("start"),
)
_OFFERS_QUERY = sa.select(WaitlistEntry).where(*_OFFER_CRITERIA)

_SUBJECTS_QUERY = (
    sa.select(
        Instrument,
        Project,
        sa.exists()
        .where(
            project_members.c.project_id == Project.id,
            project_members.c.user_id == sa.bindparam("user_id"),
        )
        .label("member"),
        TrainingRecord,
        sa.exists().where(*_OFFER_CRITERIA).label("offers"),
    )
    .select_from(Instrument)
    .outerjoin(Project, Project.id == sa.bindparam("project_id"))
    .outerjoin(
        TrainingRecord,
        sa.and_(
            TrainingRecord.user_id == sa.bindparam("user_id"),
            TrainingRecord.instrument_id == Instrument.id,
        ),
    )
    .options(joinedload(Project.allocations))
    .where(Instrument.id == sa.bindparam("instrument_id"))
)


class _Subjects(NamedTuple):
    instrument: Instrument | None
    project: Project | None
    member: bool  # the booker is on the project's member list
    training: list[TrainingRecord]  # the booker's records on the instrument
    offers: bool  # the booker has waitlist entries the booking would take


def _booking_subjects(
    db: Session,
    user: User,
    instrument_id: str,
    project_id: int,
    start: datetime,
    end: datetime,
) -> _Subjects:
    """What a booking request needs to know before any lock, read in one statement:
    the instrument, the project (allocations loaded; None when missing), the booker's
    membership, training records and whether any waitlist entries are to accept."""
    params = {
        "user_id": user.id,
        "instrument_id": instrument_id,
        "project_id": project_id,
        "start": start,
        "end": end,
    }
    rows = db.execute(_SUBJECTS_QUERY, params).unique().all()  # all: every allocation
    if not rows:
        return _Subjects(None, None, False, [], False)
    instrument, project, member, _, offers = rows[0]
    training = [r[3] for r in rows if r[3] is not None]
    return _Subjects(instrument, project, bool(member), training, bool(offers))


def _snapshot(booking: Booking) -> dict:
    return audit.snapshot(booking, BOOKING_FIELDS)


def _new_session(db: Session, booking: Booking) -> AcqSession | None:
    """The acquisition session of a confirmed microscope booking (added, not flushed)."""
    instrument = booking.instrument or db.get(Instrument, booking.instrument_id)
    if instrument.is_sample_prep:
        return None
    session = AcqSession(
        booking=booking,
        instrument_id=booking.instrument_id,
        project_id=booking.project_id,
        state="scheduled",
        start_at=booking.start_at,
        end_at=booking.end_at,
    )
    db.add(session)
    return session


def _audit_session(db: Session, actor: User, session: AcqSession) -> None:
    audit.record(db, actor, "create", "session", session.id, after={"state": "scheduled"})


def _open_session(db: Session, actor: User, booking: Booking) -> AcqSession | None:
    session = _new_session(db, booking)
    if session is not None:
        _flush_or_conflict(db, booking.instrument_id)
        _audit_session(db, actor, session)
    return session


def decide(db: Session, staff: User, booking: Booking, approve: bool, reason: str = "") -> Booking:
    """Staff approve (→ confirmed, session opened) or reject (→ slot freed) a pending booking.

    The booking's row is locked and re-read first (:func:`lock_booking`), so of two
    concurrent decisions, or a decision and a cancellation, the second sees the first's
    outcome: :class:`InvalidTransition` (409) unless the booking is still pending.
    Returns the booking as decided (the locked, current object).
    """
    permissions.require_staff(staff)
    booking = lock_booking(db, booking.id)
    if booking.status != "pending":
        raise InvalidTransition(f"booking {booking.id} is {booking.status}, not pending")
    before = _snapshot(booking)
    booking.status = "confirmed" if approve else "rejected"
    booking.decided_by_id = staff.id
    booking.decided_at = utcnow()
    action = "approve" if approve else "reject"
    audit.record(db, staff, action, "booking", booking.id, before, _snapshot(booking), reason)
    if approve:
        _open_session(db, staff, booking)
        outbox.notify_booking(db, "booking_approved", booking)
    else:
        offer_freed_slot(db, booking)
    return booking


def cancel_booking(
    db: Session, user: User, booking: Booking, now: datetime | None = None
) -> Booking:
    """Cancel a held booking. After the instrument's cancellation deadline only staff may.

    Raises :class:`Forbidden` (not the booker, the PI, or staff) or
    :class:`CancellationTooLate` (409). The freed slot is offered to the waitlist.
    """
    now = now or utcnow()
    if not permissions.can_cancel(db, user, booking):
        raise Forbidden("only the booker, the project's PI or staff may cancel this booking")
    booking = lock_booking(db, booking.id)  # a concurrent decision goes first or waits
    if booking.status not in HOLDING_BOOKING_STATES:
        raise InvalidTransition(f"booking {booking.id} is already {booking.status}")
    deadline = booking.start_at - timedelta(hours=booking.instrument.cancellation_deadline_h)
    if now > deadline and not permissions.is_staff(user):
        raise CancellationTooLate(
            f"bookings on {booking.instrument_id} can be cancelled until "
            f"{booking.instrument.cancellation_deadline_h:g} h before the start "
            f"({local_text(deadline)}); ask the facility staff"
        )
    session = lock_session_of(db, booking.id)
    if session is not None and session.state != "scheduled":
        raise Conflict(f"session {session.id} is already {session.state}; abort it instead")
    before = _snapshot(booking)
    booking.status = "cancelled"
    booking.cancelled_at = now
    audit.record(db, user, "cancel", "booking", booking.id, before, _snapshot(booking))
    if session is not None:
        session.state = "aborted"
        session.ended_at = now
        audit.record(
            db,
            user,
            "transition",
            "session",
            session.id,
            {"state": "scheduled"},
            {"state": "aborted"},
            "booking cancelled",
        )
    offer_freed_slot(db, booking, now)
    return booking


def join_waitlist(
    db: Session,
    user: User,
    instrument_id: str,
    project_id: int,
    start: datetime,
    end: datetime,
) -> WaitlistEntry:
    """Ask to be offered ``[start, end)`` on an instrument if it is freed.

    Refused as a booking would be: a retired (inactive) instrument is not found, and a
    project that is not active cannot wait for a slot it could not book.
    """
    if end <= start:
        raise InvalidInput("the end must be after the start")
    instrument = db.get(Instrument, instrument_id)
    if instrument is None or not instrument.active:
        raise NotFound(f"instrument {instrument_id!r} not found")
    project = db.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    permissions.require_can_book_for(db, user, project)
    if project.state != "active":
        # the same rule as a booking: an offer to a project that cannot book is no offer
        raise BookingRuleViolation(
            "project_state", f"project {project.code} is {project.state}, not active"
        )
    entry = WaitlistEntry(
        instrument_id=instrument_id,
        project_id=project_id,
        user_id=user.id,
        start_at=start,
        end_at=end,
        state="waiting",
    )
    db.add(entry)
    db.flush()
    audit.record(db, user, "create", "waitlist", entry.id, after={"state": "waiting"})
    return entry


def offer_freed_slot(
    db: Session, freed: Booking, now: datetime | None = None
) -> list[WaitlistEntry]:
    """Offer a freed slot to every waiting entry that overlaps it, oldest first."""
    now = now or utcnow()
    entries = db.scalars(
        sa.select(WaitlistEntry)
        .where(
            WaitlistEntry.instrument_id == freed.instrument_id,
            WaitlistEntry.state == "waiting",
            WaitlistEntry.start_at < freed.end_at,
            WaitlistEntry.end_at > freed.start_at,
        )
        .order_by(WaitlistEntry.created_at, WaitlistEntry.id)
    ).all()
    users = (
        {
            u.id: u
            for u in db.scalars(sa.select(User).where(User.id.in_({e.user_id for e in entries})))
        }
        if entries
        else {}
    )
    instrument = freed.instrument or db.get(Instrument, freed.instrument_id)
    for entry in entries:
        entry.state = "offered"
        entry.offered_at = now
        user = users.get(entry.user_id)
        if user is not None and user.email:
            outbox.enqueue(
                db,
                "waitlist_offer",
                user.email,
                instrument=instrument.name if instrument else entry.instrument_id,
                start=outbox.when(entry.start_at),
                end=outbox.when(entry.end_at),
                offer_expires="the slot is taken",
            )
        audit.record(
            db,
            None,
            "offer",
            "waitlist",
            entry.id,
            {"state": "waiting"},
            {"state": "offered", "freed_booking": freed.id},
        )
    return entries


def _offers_for(
    db: Session, user: User, instrument_id: str, start: datetime, end: datetime
) -> list[WaitlistEntry]:
    """The booker's waiting or offered waitlist entries that ``[start, end)`` overlaps."""
    params = {"user_id": user.id, "instrument_id": instrument_id, "start": start, "end": end}
    return list(db.scalars(_OFFERS_QUERY, params))


def _accept_offers(db: Session, user: User, entries: list[WaitlistEntry]) -> None:
    """Booking a slot accepts the booker's waitlist entries for it."""
    for entry in entries:
        before = {"state": entry.state}
        entry.state = "accepted"
        audit.record(db, user, "accept", "waitlist", entry.id, before, {"state": "accepted"})


def visible_bookings(
    db: Session,
    user: User,
    instrument_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
    with_project: bool = True,
) -> list[Booking]:
    """Bookings ``user`` may read (staff and technicians: all; others: their projects').

    Each comes with its user loaded, and its project unless ``with_project`` is false
    (then ``booking.project`` is loaded on first use).
    """
    dialect = _dialect(db)
    restricted = not permissions.is_operator(user)
    params: dict = {"row_limit": limit}
    if start is not None and end is not None:
        params.update(_overlap_params(db, dialect, start, end))
    elif start is not None:
        params["start"] = start
    elif end is not None:
        params["end"] = end
    if instrument_id is not None:
        params["instrument_id"] = instrument_id
    if restricted:
        params["user_id"] = user.id
    query = _visible_query(
        dialect,
        instrument_id is not None,
        start is not None,
        end is not None,
        restricted,
        with_project,
    )
    return list(db.scalars(query, params))


@functools.cache
def _visible_query(
    dialect: str,
    by_instrument: bool,
    from_start: bool,
    to_end: bool,
    restricted: bool,
    with_project: bool,
) -> sa.Select:
    options = [joinedload(Booking.user)]
    if with_project:
        options.append(joinedload(Booking.project))
    query = (
        sa.select(Booking)
        .options(*options)
        .order_by(Booking.start_at, Booking.id)
        .limit(sa.bindparam("row_limit"))
    )
    if by_instrument:
        query = query.where(Booking.instrument_id == sa.bindparam("instrument_id"))
    if from_start and to_end:
        query = query.where(_overlap_clause(dialect))
    elif from_start:
        query = query.where(Booking.end_at > _time_param("start"))
    elif to_end:
        query = query.where(Booking.start_at < _time_param("end"))
    if restricted:  # the user's projects, in the same statement
        ids = permissions.project_ids_select(sa.bindparam("user_id"))
        query = query.where(Booking.project_id.in_(ids))
    return query


def busy_intervals(
    db: Session, instrument_id: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime, str]]:
    """Occupied ``[start, end)`` intervals on an instrument, without who holds them.

    What a calendar shows to people outside the holding project: (start, end, kind)
    with kind ``booked`` or ``maintenance``.
    """
    dialect = _dialect(db)
    params = {"instrument_id": instrument_id, **_overlap_params(db, dialect, start, end)}
    return sorted((s, e, kind) for s, e, kind in db.execute(_busy_query(dialect), params))


@functools.cache
def _busy_query(dialect: str) -> sa.CompoundSelect:
    booked = sa.select(Booking.start_at, Booking.end_at, sa.literal("booked")).where(
        Booking.instrument_id == sa.bindparam("instrument_id"),
        Booking.status.in_(HOLDING_BOOKING_STATES),
        _overlap_clause(dialect),
    )
    blocked = sa.select(
        MaintenanceBlock.start_at, MaintenanceBlock.end_at, sa.literal("maintenance")
    ).where(
        MaintenanceBlock.instrument_id == sa.bindparam("instrument_id"),
        MaintenanceBlock.start_at < _time_param("end"),
        MaintenanceBlock.end_at > _time_param("start"),
    )
    return sa.union_all(booked, blocked)


def add_maintenance(
    db: Session, staff: User, instrument_id: str, start: datetime, end: datetime, reason: str
) -> MaintenanceBlock:
    """Block an instrument for maintenance; refused (409) when it overlaps a held booking."""
    permissions.require_operator(staff)
    if end <= start:
        raise InvalidInput("the end must be after the start")
    if db.get(Instrument, instrument_id) is None:
        raise NotFound(f"instrument {instrument_id!r} not found")
    _lock(db, instrument_id, None)
    check_free(db, instrument_id, start, end)
    block = MaintenanceBlock(
        instrument_id=instrument_id,
        start_at=start,
        end_at=end,
        reason=reason[:2000],
        created_by_id=staff.id,
    )
    db.add(block)
    db.flush()
    audit.record(
        db,
        staff,
        "create",
        "maintenance",
        block.id,
        after={"instrument_id": instrument_id, "start_at": start, "end_at": end},
        reason=reason,
    )
    return block
