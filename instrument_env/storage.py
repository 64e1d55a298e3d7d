"""Reading queries, down-sampled rollups (1 min, 1 h) and the retention policy.

Rollups are recomputed from raw readings for every bucket touched by an ingest
(``env_rollup_dirty``), so late and out-of-order readings end up in the right bucket.
Retention deletes raw readings (and 1-min rollups) older than configured ages after
their rollups are up to date; hourly rollups are kept for the long view.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from instrument_env.limits import MAX_BAND
from instrument_env.models import BandTimes, DirtyRange, Reading, Rollup, to_us

ROLLUP_RESOLUTIONS_S = (60, 3600)


@dataclass(frozen=True)
class Series:
    """Readings of one channel, sorted by time (``ts_us``: µs since epoch, UTC)."""

    ts_us: np.ndarray
    values: np.ndarray
    bands: np.ndarray
    unit: str

    def __len__(self) -> int:
        return len(self.ts_us)


def channel_series_us(
    session: Session, sensor: str, quantity: str, start_us: int, end_us: int, *, band=None
) -> Series:
    """Raw readings of (sensor, quantity) with ``start_us <= ts <= end_us`` (µs since the
    epoch; all bands unless ``band`` is given), in time order."""
    query = (
        sa.select(Reading.ts_us, Reading.value, Reading.band, Reading.unit)
        .where(
            Reading.sensor == sensor,
            Reading.quantity == quantity,
            Reading.ts_us >= start_us,
            Reading.ts_us <= end_us,
        )
        .order_by(Reading.ts_us)
    )
    if band is not None:
        query = query.where(Reading.band == band)
    rows = session.connection().execute(query).all()  # Core: no ORM row overhead
    if not rows:
        return Series(np.empty(0, np.int64), np.empty(0), np.empty(0, object), "")
    ts, values, bands, units = zip(*rows, strict=True)
    return Series(np.asarray(ts, np.int64), np.asarray(values, float), np.asarray(bands), units[0])


#: Textual queries compiled per (dialect name, SQL): the driver's SQL string and the
#: order of its positional parameters (None: the driver takes named parameters).
_DRIVER_SQL: dict[tuple[str, str], tuple[str, list[str] | None]] = {}


def driver_fetchall(session: Session, sql: str, params: dict) -> list[tuple]:
    """All rows of ``sql`` (textual, ``:name`` parameters) as the DB-API driver returns
    them: a plain cursor on the session's connection, in its transaction, without
    SQLAlchemy's statement building, caching and result rows (the gate's hot path).

    Driver errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` subclasses,
    as ``session.execute`` raises them), and a lost connection is invalidated.
    """
    conn = session.connection()
    dialect = conn.dialect
    compiled = _DRIVER_SQL.get((dialect.name, sql))
    if compiled is None:
        statement = sa.text(sql).compile(dialect=dialect)
        order = list(statement.positiontup) if statement.positional else None
        compiled = _DRIVER_SQL[(dialect.name, sql)] = (statement.string, order)
    driver_sql, order = compiled
    args = [params[name] for name in order] if order is not None else params
    dbapi_error = dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()
    try:
        cursor.execute(driver_sql, args)
        return cursor.fetchall()
    except dbapi_error as exc:
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            driver_sql, args, exc, dbapi_error, connection_invalidated=lost, dialect=dialect
        ) from exc
    finally:
        with contextlib.suppress(dbapi_error):  # a cursor of a lost connection
            cursor.close()


def band_condition(band: str, param: str) -> tuple[str, dict[str, str]]:
    """The SQL condition on ``band`` for a raw statement and its bound values:
    `` AND band = :param`` with ``{param: band}``, except for the derived
    :data:`~instrument_env.limits.MAX_BAND`, spelt as a literal (no bound value) so that
    SQLite's and PostgreSQL's planners can use the partial index
    ``ix_env_readings_max_band`` (a bound parameter does not prove the index's
    ``band = 'max'`` condition)."""
    if band == MAX_BAND:
        return f" AND band = '{MAX_BAND}'", {}
    return f" AND band = :{param}", {param: band}


_VALUES_SQL = (
    "SELECT ts_us, value FROM env_readings WHERE sensor = :sensor AND quantity = :quantity "
    "AND ts_us >= :start AND ts_us <= :end{band} ORDER BY ts_us"
)


def channel_values_us(
    session: Session, sensor: str, quantity: str, start_us: int, end_us: int, *, band=None
) -> tuple[np.ndarray, np.ndarray]:
    """Times and values of (sensor, quantity) with ``start_us <= ts_us <= end_us``, by time.

    The same rows and order as :func:`channel_series_us`, without bands and units: the
    two columns only, fetched by :func:`driver_fetchall` and converted to numpy in one
    step (the gate's exact evaluation reads thousands of rows per rule).
    """
    params = {"sensor": sensor, "quantity": quantity, "start": start_us, "end": end_us}
    condition = ""
    if band is not None:
        condition, bound = band_condition(band, "band")
        params.update(bound)
    sql = _VALUES_SQL.format(band=condition)
    rows = driver_fetchall(session, sql, params)
    if not rows:
        return np.empty(0, np.int64), np.empty(0)
    table = np.array(rows, dtype=[("ts_us", np.int64), ("value", np.float64)])
    return np.ascontiguousarray(table["ts_us"]), np.ascontiguousarray(table["value"])


def last_reading_us(session: Session, sensor: str, at_us: int) -> int | None:
    """Time of the newest reading of ``sensor`` (any quantity) at or before ``at_us``."""
    return session.execute(
        sa.select(sa.func.max(Reading.ts_us)).where(
            Reading.sensor == sensor, Reading.ts_us <= at_us
        )
    ).scalar()


def last_reading_of_channel_us(session: Session, sensor: str, quantity: str, at_us: int):
    """Newest ts of (sensor, quantity) at or before ``at_us`` (uses the primary-key index)."""
    return session.execute(
        sa.select(Reading.ts_us)
        .where(Reading.sensor == sensor, Reading.quantity == quantity, Reading.ts_us <= at_us)
        .order_by(Reading.ts_us.desc())
        .limit(1)
    ).scalar()


def refresh_rollups(session: Session) -> int:
    """Recompute every rollup bucket touched since the last refresh.

    Returns the number of channels whose rollups were recomputed.
    """
    dirty = session.execute(
        sa.select(
            DirtyRange.sensor,
            DirtyRange.quantity,
            sa.func.min(DirtyRange.start_us),
            sa.func.max(DirtyRange.end_us),
            sa.func.max(DirtyRange.id),
        ).group_by(DirtyRange.sensor, DirtyRange.quantity)
    ).all()
    if not dirty:
        return 0
    for sensor, quantity, start_us, end_us, _ in dirty:
        for resolution_s in ROLLUP_RESOLUTIONS_S:
            _rollup_range(session, resolution_s, sensor, quantity, start_us, end_us)
    max_id = max(row[4] for row in dirty)
    session.execute(sa.delete(DirtyRange).where(DirtyRange.id <= max_id))
    return len(dirty)


def _rollup_range(
    session: Session, resolution_s: int, sensor: str, quantity: str, start_us: int, end_us: int
) -> None:
    res_us = resolution_s * 1_000_000
    lo = start_us - start_us % res_us
    hi = end_us - end_us % res_us + res_us  # exclusive
    session.execute(
        sa.delete(Rollup).where(
            Rollup.resolution_s == resolution_s,
            Rollup.sensor == sensor,
            Rollup.quantity == quantity,
            Rollup.bucket_us >= lo,
            Rollup.bucket_us < hi,
        )
    )
    session.execute(
        sa.insert(Rollup).from_select(
            ["resolution_s", "sensor", "quantity", "bucket_us", "band", "n", "min", "max", "mean"],
            _bucket_select(resolution_s, sensor, quantity, lo, hi),
        )
    )


def _bucket_select(resolution_s: int, sensor: str, quantity: str, lo_us: int, hi_us: int):
    """Per (bucket, band) statistics of the raw readings of one channel with
    ``lo_us <= ts_us < hi_us``: the rows of :class:`Rollup`, column for column."""
    res_us = resolution_s * 1_000_000
    # Integer division of BIGINT by an integer literal truncates on SQLite and PostgreSQL.
    bucket = (Reading.ts_us.op("/")(sa.literal_column(str(res_us)))).op("*")(
        sa.literal_column(str(res_us))
    )
    return (
        sa.select(
            sa.literal(resolution_s).label("resolution_s"),
            Reading.sensor,
            Reading.quantity,
            bucket.label("bucket_us"),
            Reading.band,
            sa.func.count().label("n"),
            sa.func.min(Reading.value),
            sa.func.max(Reading.value),
            sa.func.avg(Reading.value),
        )
        .where(
            Reading.sensor == sensor,
            Reading.quantity == quantity,
            Reading.ts_us >= lo_us,
            Reading.ts_us < hi_us,
        )
        .group_by(Reading.sensor, Reading.quantity, bucket, Reading.band)
    )


def rollup_series(
    session: Session,
    resolution_s: int,
    sensor: str,
    quantity: str,
    start: datetime,
    end: datetime,
    *,
    band: str | None = "",
    pending: bool = True,
) -> list[dict]:
    """Rollup buckets of one channel from the bucket holding ``start`` to ``end``:
    ``[{"start_us", "n", "min", "max", "mean"}]`` (the technician's charts).

    ``band=None`` takes every band of a banded channel together, bucket by bucket: the
    lowest minimum, the highest maximum and the highest mean (the worst band), ``n`` summed.

    ``pending``: buckets touched by readings that no :func:`refresh_rollups` has rolled up
    yet (``env_rollup_dirty``) are computed from the raw readings, so the series is current
    without writing anything (a page's GET must not: two refreshes at once conflict on the
    rollups' primary key). False: the stored rollups only.
    """
    res_us = resolution_s * 1_000_000
    first = to_us(start) - to_us(start) % res_us
    last = to_us(end)  # bucket starts up to here
    # (lo, hi): bucket starts computed from raw readings, inclusive; None: none
    lo = hi = None
    if pending:
        dirty_lo, dirty_hi = session.execute(
            sa.select(sa.func.min(DirtyRange.start_us), sa.func.max(DirtyRange.end_us)).where(
                DirtyRange.sensor == sensor, DirtyRange.quantity == quantity
            )
        ).one()
        if dirty_lo is not None:
            lo = max(first, dirty_lo - dirty_lo % res_us)
            hi = min(last, dirty_hi - dirty_hi % res_us)
            if lo > hi:
                lo = hi = None
    query = sa.select(
        Rollup.bucket_us,
        sa.func.sum(Rollup.n),
        sa.func.min(Rollup.min),
        sa.func.max(Rollup.max),
        sa.func.max(Rollup.mean),
    ).where(
        Rollup.resolution_s == resolution_s,
        Rollup.sensor == sensor,
        Rollup.quantity == quantity,
        Rollup.bucket_us >= first,
        Rollup.bucket_us <= last,
    )
    if band is not None:
        query = query.where(Rollup.band == band)
    if lo is not None:
        query = query.where(sa.or_(Rollup.bucket_us < lo, Rollup.bucket_us > hi))
    buckets = {
        start_us: {"start_us": start_us, "n": int(n), "min": low, "max": high, "mean": mean}
        for start_us, n, low, high, mean in session.execute(query.group_by(Rollup.bucket_us))
    }
    if lo is not None:
        raw = _bucket_select(resolution_s, sensor, quantity, lo, hi + res_us).subquery()
        rows = sa.select(raw.c.bucket_us, *list(raw.c)[5:])
        if band is not None:
            rows = rows.where(raw.c.band == band)
        for start_us, n, low, high, mean in session.execute(rows):
            found = buckets.get(start_us)
            if found is None:
                buckets[start_us] = {
                    "start_us": start_us,
                    "n": int(n),
                    "min": low,
                    "max": high,
                    "mean": mean,
                }
            else:  # another band of the same bucket: the worst, as the rollups' query
                found["n"] += int(n)
                found["min"] = min(found["min"], low)
                found["max"] = max(found["max"], high)
                found["mean"] = max(found["mean"], mean)
    return [buckets[key] for key in sorted(buckets)]


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each resolution is kept (None: forever)."""

    raw_days: float | None = 400.0
    minute_days: float | None = 800.0
    hour_days: float | None = None


def retention_policy(config) -> RetentionPolicy:
    """The policy of ``limits.yaml`` (``retention:``) for an :class:`EnvConfig`."""
    return RetentionPolicy(**config.retention_days)


def apply_retention(
    session: Session, now: datetime, policy: RetentionPolicy = RetentionPolicy()
) -> dict[str, int]:
    """Delete data older than the policy allows, after bringing rollups up to date.

    Returns the number of rows deleted per table/resolution.
    """
    refresh_rollups(session)
    deleted = {"raw": 0, "60": 0, "3600": 0}
    now_us = to_us(now)
    if policy.raw_days is not None:
        cutoff = now_us - to_us_delta(timedelta(days=policy.raw_days))
        channels = session.execute(sa.select(Reading.sensor, Reading.quantity).distinct()).all()
        for sensor, quantity in channels:  # per channel: the primary key serves the range
            result = session.execute(
                sa.delete(Reading).where(
                    Reading.sensor == sensor, Reading.quantity == quantity, Reading.ts_us < cutoff
                )
            )
            deleted["raw"] += max(result.rowcount or 0, 0)
            session.execute(
                sa.delete(BandTimes).where(
                    BandTimes.sensor == sensor,
                    BandTimes.quantity == quantity,
                    BandTimes.ts_us < cutoff,
                )
            )
    for resolution_s, days in ((60, policy.minute_days), (3600, policy.hour_days)):
        if days is None:
            continue
        cutoff = now_us - to_us_delta(timedelta(days=days))
        result = session.execute(
            sa.delete(Rollup).where(Rollup.resolution_s == resolution_s, Rollup.bucket_us < cutoff)
        )
        deleted[str(resolution_s)] = max(result.rowcount or 0, 0)
    return deleted


def to_us_delta(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
