"""The portal's tables as SQLAlchemy 2.0 typed models.

Every timestamp is stored in UTC (``timestamptz`` on PostgreSQL) and read back as
an aware ``datetime`` on every backend (:class:`UTCDateTime`). Durations are in hours
(``*_h``). The schema itself is created by the Alembic migrations in
``portal/migrations`` — ``Base.metadata`` must agree with them (a test checks it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("researcher", "pi", "staff", "technician", "admin")
PROJECT_STATES = ("draft", "submitted", "approved", "active", "closed")
#: ``pending`` waits for staff approval; pending and confirmed bookings hold their slot.
BOOKING_STATES = ("pending", "confirmed", "rejected", "cancelled")
HOLDING_BOOKING_STATES = ("pending", "confirmed")
SESSION_STATES = ("scheduled", "ready", "acquiring", "processing", "complete", "aborted")
#: Sessions that still claim their slot on the instrument: no two may overlap (migration 0003).
LIVE_SESSION_STATES = ("scheduled", "ready", "acquiring", "processing")
OUTBOX_STATES = ("pending", "sent", "logged", "failed")
WAITLIST_STATES = ("waiting", "offered", "accepted", "withdrawn")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """An aware UTC datetime on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given; times must carry an offset"
            )
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: sa.JSON}


class Room(Base):
    __tablename__ = "rooms"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))


class Instrument(Base):
    """A bookable instrument; ``id`` is its key in config/facility.yaml (e.g. ``krios1``)."""

    __tablename__ = "instruments"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(64))
    room_id: Mapped[str] = mapped_column(sa.ForeignKey("rooms.id"))
    requires_approval: Mapped[bool] = mapped_column(default=False)
    environment_gated: Mapped[bool] = mapped_column(default=False)
    min_duration_h: Mapped[float]
    max_duration_h: Mapped[float]
    lead_time_h: Mapped[float]
    cancellation_deadline_h: Mapped[float]
    #: how far ahead a booking may end, in days (facility.yaml ``booking.horizon_days``)
    horizon_days: Mapped[float] = mapped_column(default=365.0)
    active: Mapped[bool] = mapped_column(default=True)

    room: Mapped[Room] = relationship()

    @property
    def is_sample_prep(self) -> bool:
        return self.kind != "microscope"


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(80), unique=True)
    email: Mapped[str] = mapped_column(sa.String(200))
    full_name: Mapped[str] = mapped_column(sa.String(200))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(20))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Bumped by log-out, password change, reset and deactivation: every cookie that
    #: carries an older epoch is dead at its next request.
    auth_epoch: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    #: Bumped to revoke every calendar-feed link issued before.
    feed_generation: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))

    def public(self) -> dict[str, Any]:
        """What any API response may say about a user (never the hash)."""
        return {"id": self.id, "username": self.username, "full_name": self.full_name}


def _members_table(name: str, group: str) -> sa.Table:
    """The membership table ``name``: (``<group>_id``, ``user_id``) pairs."""
    return sa.Table(
        name,
        Base.metadata,
        sa.Column(f"{group}_id", sa.ForeignKey(f"{group}s.id"), primary_key=True),
        sa.Column("user_id", sa.ForeignKey("users.id"), primary_key=True),
    )


lab_members = _members_table("lab_members", "lab")


class Lab(Base):
    """A research group: one PI and its members."""

    __tablename__ = "labs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    pi_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))

    pi: Mapped[User] = relationship(foreign_keys=[pi_id])
    members: Mapped[list[User]] = relationship(secondary=lab_members)


project_members = _members_table("project_members", "project")


class Project(Base):
    """An access proposal: owned by a PI, with members and an allocation per instrument kind."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(40), unique=True)
    title: Mapped[str] = mapped_column(sa.String(300))
    abstract: Mapped[str] = mapped_column(sa.Text, default="")
    pi_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    lab_id: Mapped[int | None] = mapped_column(sa.ForeignKey("labs.id"))
    state: Mapped[str] = mapped_column(sa.String(20), default="draft")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    pi: Mapped[User] = relationship(foreign_keys=[pi_id])
    members: Mapped[list[User]] = relationship(secondary=project_members)
    allocations: Mapped[list[Allocation]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )

    def allocation_h(self, instrument_kind: str) -> float:
        """Hours allocated on instruments of ``instrument_kind`` (0 when none)."""
        return sum(a.hours for a in self.allocations if a.instrument_kind == instrument_kind)


class Allocation(Base):
    __tablename__ = "allocations"
    __table_args__ = (sa.UniqueConstraint("project_id", "instrument_kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"))
    instrument_kind: Mapped[str] = mapped_column(sa.String(64))
    hours: Mapped[float]

    project: Mapped[Project] = relationship(back_populates="allocations")


class TrainingRecord(Base):
    """A user's training on one instrument, granted by staff; valid until expiry or revocation."""

    __tablename__ = "training_records"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    instrument_id: Mapped[str] = mapped_column(sa.ForeignKey("instruments.id"))
    granted_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    def valid_at(self, at: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= at:
            return False
        return self.expires_at is None or at < self.expires_at


class MaintenanceBlock(Base):
    __tablename__ = "maintenance_blocks"
    id: Mapped[int] = mapped_column(primary_key=True)
    instrument_id: Mapped[str] = mapped_column(sa.ForeignKey("instruments.id"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class _Slot:
    """What a booking and a waitlist wish share: a slot ``[start_at, end_at)`` in UTC on
    one instrument, for a project, asked for by a user."""

    id: Mapped[int] = mapped_column(primary_key=True)
    instrument_id: Mapped[str] = mapped_column(sa.ForeignKey("instruments.id"))
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]


class Booking(_Slot, Base):
    """A time slot on one instrument, ``[start_at, end_at)`` in UTC.

    ``for_booking_id`` links a sample-preparation slot to the microscope booking it
    prepares grids for. On PostgreSQL an exclusion constraint (migration 0001) makes
    two holding bookings on one instrument overlap impossible.
    """

    __tablename__ = "bookings"
    __table_args__ = (
        sa.CheckConstraint("end_at > start_at", name="ck_bookings_positive_duration"),
        sa.Index("ix_bookings_instrument_start", "instrument_id", "start_at"),
        sa.Index("ix_bookings_project", "project_id"),
    )
    status: Mapped[str] = mapped_column(sa.String(20))
    for_booking_id: Mapped[int | None] = mapped_column(sa.ForeignKey("bookings.id"))
    note: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]

    instrument: Mapped[Instrument] = relationship()
    project: Mapped[Project] = relationship()
    user: Mapped[User] = relationship(foreign_keys="Booking.user_id")

    @property
    def duration_h(self) -> float:
        """Hours, on UTC moments (a booking across a clock change: its true length)."""
        return (self.end_at.astimezone(UTC) - self.start_at.astimezone(UTC)).total_seconds() / 3600

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instrument_id": self.instrument_id,
            "project_id": self.project_id,
            "user": self.user.public(),
            "start": self.start_at.isoformat(),
            "end": self.end_at.isoformat(),
            "status": self.status,
            "for_booking_id": self.for_booking_id,
        }


class WaitlistEntry(_Slot, Base):
    """A wish for a slot that was taken; offered to the user when an overlapping booking is freed."""

    __tablename__ = "waitlist_entries"
    state: Mapped[str] = mapped_column(sa.String(20), default="waiting")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    offered_at: Mapped[datetime | None]


def _booking_time(column: str):
    """A column default: the session's booking's ``start_at`` or ``end_at``."""

    def default(context) -> datetime | None:
        booking_id = context.get_current_parameters().get("booking_id")
        booking_column = getattr(Booking, column)
        return context.connection.scalar(sa.select(booking_column).where(Booking.id == booking_id))

    return default


class AcqSession(Base):
    """A microscope booking as it is run: scheduled → ready → acquiring → processing → complete.

    ``start_at``/``end_at`` copy the booking's slot (default: read from the booking), so
    the database itself can refuse two live sessions overlapping on one instrument: an
    exclusion constraint on PostgreSQL, triggers on SQLite (migration 0003).
    """

    __tablename__ = "sessions"
    __table_args__ = (
        sa.CheckConstraint("end_at > start_at", name="ck_sessions_positive_duration"),
        sa.Index("ix_sessions_instrument_start", "instrument_id", "start_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    booking_id: Mapped[int] = mapped_column(sa.ForeignKey("bookings.id"), unique=True)
    instrument_id: Mapped[str] = mapped_column(sa.ForeignKey("instruments.id"))
    project_id: Mapped[int] = mapped_column(sa.ForeignKey("projects.id"))
    state: Mapped[str] = mapped_column(sa.String(20), default="scheduled")
    start_at: Mapped[datetime] = mapped_column(default=_booking_time("start_at"))
    end_at: Mapped[datetime] = mapped_column(default=_booking_time("end_at"))
    operator_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    raw_dir: Mapped[str | None] = mapped_column(sa.String(1000))
    run_dir: Mapped[str | None] = mapped_column(sa.String(1000))
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    booking: Mapped[Booking] = relationship()
    operator: Mapped[User | None] = relationship()


class AuditEntry(Base):
    """Who changed what, when, with the values before and after (admins only may read)."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_entity", "entity", "entity_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(sa.String(80))
    entity: Mapped[str] = mapped_column(sa.String(80))
    entity_id: Mapped[str] = mapped_column(sa.String(80))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    reason: Mapped[str] = mapped_column(sa.Text, default="")

    actor: Mapped[User | None] = relationship()


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    token_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    user: Mapped[User] = relationship()


class LoginAttempt(Base):
    """One password check, kept to rate-limit logins across processes."""

    __tablename__ = "login_attempts"
    __table_args__ = (sa.Index("ix_login_attempts_username_at", "username", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(80))
    remote_addr: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    success: Mapped[bool]


class OutboxMessage(Base):
    """One notification to send, written in the transaction of the change that causes it.

    ``cryofac portal worker`` delivers it (SMTP, or the log when no server is set) and
    marks it ``sent``/``logged``; a failed attempt stays ``pending`` with ``last_error``
    and ``next_attempt_at`` pushed back (exponential backoff) until ``failed`` after the
    last attempt. ``dedupe_key`` (unique) makes a notice that periodic jobs find (a run
    finished, an alarm escalated) be written once. Requests only ever insert here.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
        sa.Index("ix_outbox_sent_at", "sent_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    recipients: Mapped[str] = mapped_column(sa.Text)  # comma-separated addresses
    subject: Mapped[str] = mapped_column(sa.Text)
    body: Mapped[str] = mapped_column(sa.Text)
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(200), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)

    @property
    def to(self) -> list[str]:
        return [r for r in self.recipients.split(",") if r]


class LoginThrottle(Base):
    """Failed log-ins of one key (``user:NAME`` or ``addr:IP``) and when it may try next.

    Rows are locked and updated in one short transaction before any password is
    checked, so concurrent guesses cannot slip past the count.
    """

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(sa.String(160), primary_key=True)
    failures: Mapped[int]
    next_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
