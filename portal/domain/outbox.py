"""The notification outbox: rows written in the transaction of the change that causes them.

A booking confirmed, approved or offered to the waitlist adds its notice to the same
database session as the change (:func:`enqueue`), so both commit or neither does: a
crash can neither lose a notice nor send one for a change that rolled back. Requests
only insert; they never read the outbox, so a request costs the same however many
notices exist. ``cryofac portal worker`` (:mod:`portal.worker`) delivers and marks them.
No Flask here.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.domain.timezones import local_text
from portal.models import Booking, Instrument, OutboxMessage, Project, User, utcnow
from portal.notify import compose

#: The longest subject or body kept (characters); longer texts are cut.
MAX_TEXT = 20_000


def clean_recipients(to: list[str] | str | None) -> list[str]:
    """Addresses fit for an e-mail header: non-empty, no whitespace, commas or controls
    (local names without ``@``, such as an alarm's ``facility-staff``, are kept)."""
    items = [to] if isinstance(to, str) else list(to or [])
    kept = []
    for address in items:
        address = (address or "").strip()
        if not address or len(address) > 254:
            continue
        if any(c.isspace() or c == "," or ord(c) < 32 for c in address):
            continue
        if address not in kept:
            kept.append(address)
    return kept


def enqueue_raw(
    db: Session,
    kind: str,
    to: list[str] | str | None,
    subject: str,
    body: str,
    *,
    dedupe_key: str | None = None,
    now: datetime | None = None,
) -> OutboxMessage | None:
    """Add one message to ``db``'s transaction; None when it has no usable recipient."""
    recipients = clean_recipients(to)
    if not recipients:
        return None
    now = now or utcnow()
    message = OutboxMessage(
        kind=kind,
        recipients=",".join(recipients),
        subject=" ".join(subject.split())[:MAX_TEXT],  # one header line
        body=body[:MAX_TEXT],
        dedupe_key=dedupe_key,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )
    db.add(message)
    return message


def enqueue(
    db: Session,
    kind: str,
    to: list[str] | str | None,
    *,
    dedupe_key: str | None = None,
    now: datetime | None = None,
    **context: object,
) -> OutboxMessage | None:
    """Add a message of ``kind`` (see :data:`portal.notify.SUBJECTS`) to ``db``'s transaction."""
    subject, body = compose(kind, **context)
    return enqueue_raw(db, kind, to, subject, body, dedupe_key=dedupe_key, now=now)


def when(moment: datetime | None) -> str:
    """How a notice writes a time: in the facility's zone, named, to the minute
    (``2026-12-15 03:00 CET (Europe/Berlin)``). The zone is the display zone of the
    request or worker (:func:`portal.domain.timezones.use_display_zone`)."""
    return local_text(moment) if moment else "?"


def booking_context(db: Session, booking: Booking) -> dict[str, str]:
    instrument = booking.instrument or db.get(Instrument, booking.instrument_id)
    return {
        "instrument": instrument.name if instrument else booking.instrument_id,
        "start": when(booking.start_at),
        "end": when(booking.end_at),
    }


def notify_booking(db: Session, kind: str, booking: Booking, user: User | None = None) -> None:
    """``booking_confirmed`` or ``booking_approved`` to the booker (``user``: when loaded)."""
    user = user or booking.user or db.get(User, booking.user_id)
    if user is not None and user.email:
        enqueue(db, kind, user.email, **booking_context(db, booking))


def project_emails(db: Session, project_id: int) -> list[str]:
    """E-mail addresses of a project's PI and members (active users only)."""
    project = db.get(Project, project_id)
    if project is None:
        return []
    people = [project.pi, *project.members]
    return sorted({p.email for p in people if p is not None and p.active and p.email})


def messages(
    db: Session, kind: str | None = None, status: str | None = None
) -> list[OutboxMessage]:
    """Outbox rows, oldest first (tests, the CLI; never a request)."""
    query = sa.select(OutboxMessage).order_by(OutboxMessage.id)
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    return list(db.scalars(query))
