"""Database tables of instrument_env (own declarative base, tables prefixed ``env_``).

Reading timestamps are stored as integer microseconds since the Unix epoch (UTC) in
``ts_us``: exact, indexable, and bucketed for rollups with integer arithmetic that
means the same on SQLite and PostgreSQL. Event times (alarms, overrides) are
timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Alarm states, in the order an alarm normally passes through them.
ALARM_STATES = ("pending", "firing", "acknowledged", "resolved")
OPEN_STATES = ("pending", "firing", "acknowledged")


class UTCDateTime(TypeDecorator):
    """A datetime stored as naive UTC and always returned timezone-aware (UTC)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class EnvBase(DeclarativeBase):
    """Declarative base of every instrument_env table (independent of the portal's)."""


class Reading(EnvBase):
    """One reading of one channel. The primary key makes ingest idempotent."""

    __tablename__ = "env_readings"
    # SQLite: clustered on the key, so a time-range scan of a channel reads contiguous rows.
    # The partial index holds only the derived per-time maximum band (``MAX_BAND``): a
    # "band: any" rule reads one row per time without walking every band's rows in the
    # key's (sensor, quantity, ts_us, band) order. Covering (value included); used only by
    # statements that spell ``band = 'max'`` as a literal (the planners must see it).
    __table_args__ = (
        sa.Index(
            "ix_env_readings_max_band",
            "sensor",
            "quantity",
            "ts_us",
            "value",
            sqlite_where=sa.text("band = 'max'"),
            postgresql_where=sa.text("band = 'max'"),
        ),
        {"sqlite_with_rowid": False},
    )
    sensor: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    quantity: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ts_us: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    band: Mapped[str] = mapped_column(sa.String(16), primary_key=True, default="")
    value: Mapped[float] = mapped_column(sa.Float, nullable=False)
    unit: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="")


class BandTimes(EnvBase):
    """The band labels stored at one reading time of a banded channel, kept at ingest.

    ``bands``: the time's stored band labels (``max`` excluded) in code-point order,
    joined by :data:`BAND_SEPARATOR` (a control character, which no label may hold).
    One row per time: the gate proves a window's per-band coverage by reading one row per
    time (equal to the configured labels at every time) instead of one index entry per
    band and time. A row that differs (a band missing, an extra band, an older row) only
    sends the gate to its exact per-band count.
    """

    __tablename__ = "env_band_times"
    __table_args__ = {"sqlite_with_rowid": False}
    sensor: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    quantity: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ts_us: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    bands: Mapped[str] = mapped_column(sa.Text, nullable=False)


#: Joins the band labels of :class:`BandTimes` (labels never hold control characters).
BAND_SEPARATOR = "\x1f"


def band_set_text(bands) -> str:
    """The :class:`BandTimes` ``bands`` text of a set of band labels."""
    return BAND_SEPARATOR.join(sorted(set(bands)))


class RejectedReading(EnvBase):
    """A reading refused by ingest, kept with its reason outside the series.

    ``kind``: ``invalid`` (malformed), ``implausible`` (outside the quantity's physical
    range, or a no-value code), ``conflict`` (same sensor, quantity, time and band as a
    stored reading, another value: a second publisher), ``clock`` (too far in the future
    or implausibly old). ``payload``: the reading as received (JSON, escaped, truncated).
    """

    __tablename__ = "env_rejected_readings"
    __table_args__ = (sa.Index("ix_env_rejected_sensor_ts", "sensor", "kind", "ts_us"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    source: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    sensor: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    quantity: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    ts_us: Mapped[int | None] = mapped_column(sa.BigInteger)
    band: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="")
    value: Mapped[float | None] = mapped_column(sa.Float)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    payload: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")


class Rollup(EnvBase):
    """Down-sampled statistics of one channel over one bucket (60 s or 3600 s)."""

    __tablename__ = "env_rollups"
    __table_args__ = {"sqlite_with_rowid": False}
    resolution_s: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    sensor: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    quantity: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    bucket_us: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    band: Mapped[str] = mapped_column(sa.String(16), primary_key=True, default="")
    n: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    min: Mapped[float] = mapped_column(sa.Float, nullable=False)
    max: Mapped[float] = mapped_column(sa.Float, nullable=False)
    mean: Mapped[float] = mapped_column(sa.Float, nullable=False)


class DirtyRange(EnvBase):
    """A time range of a channel whose rollups must be recomputed (new or late readings)."""

    __tablename__ = "env_rollup_dirty"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sensor: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    quantity: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    start_us: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    end_us: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)


class Alarm(EnvBase):
    """One alarm of one rule: pending -> firing -> acknowledged -> resolved."""

    __tablename__ = "env_alarms"
    __table_args__ = (sa.Index("ix_env_alarms_rule_state", "rule_id", "state"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    room: Mapped[str] = mapped_column(sa.String(64), nullable=False, index=True)
    sensor: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    quantity: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # high/low/drift/stale
    severity: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # warning/critical
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False, index=True)
    message: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    threshold: Mapped[float | None] = mapped_column(sa.Float)
    worst_value: Mapped[float | None] = mapped_column(sa.Float)
    unit: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(sa.String(128))
    ack_comment: Mapped[str | None] = mapped_column(sa.Text)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    def to_dict(self) -> dict:
        """JSON-ready representation (ISO 8601 times with offset)."""
        out = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            out[column.key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class AlarmEvent(EnvBase):
    """Audit trail: every state change of every alarm, with who and why."""

    __tablename__ = "env_alarm_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(
        sa.ForeignKey("env_alarms.id", ondelete="CASCADE"), nullable=False, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    from_state: Mapped[str | None] = mapped_column(sa.String(16))
    to_state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    actor: Mapped[str] = mapped_column(sa.String(128), nullable=False, default="system")
    comment: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")


class Notification(EnvBase):
    """Outbox of notifications (escalations); a sender marks them ``sent_at``."""

    __tablename__ = "env_notifications"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("env_alarms.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    recipient: Mapped[str] = mapped_column(sa.String(256), nullable=False)
    subject: Mapped[str] = mapped_column(sa.Text, nullable=False)
    body: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GateOverride(EnvBase):
    """A staff override of a refused gate decision, with the reason (audited)."""

    __tablename__ = "env_gate_overrides"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instrument_id: Mapped[str] = mapped_column(sa.String(64), nullable=False, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    user: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    refused_reasons: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_us(ts: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (UTC)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: pass a timezone-aware datetime")
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(ts_us: int) -> datetime:
    """Integer microseconds since the epoch -> aware UTC datetime."""
    return datetime.fromtimestamp(ts_us // 1_000_000, UTC).replace(microsecond=ts_us % 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
