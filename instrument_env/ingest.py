"""Batch ingest of readings: validate each, keep the good ones, say why the others failed.

One reading is ``{"sensor", "quantity", "ts", "value", "unit"}`` (+ optional ``"band"``),
as in CONTRACT.md. A reading may instead carry raw samples of a high-rate sensor
(``"raw": {"sample_rate_Hz", "samples"}`` with quantity ``vibration`` or
``magnetic_field``); it is reduced by :func:`instrument_env.reduce.expand_raw_reading`
to band velocities or mains-frequency RMS and DC field before validation. ``ts`` is ISO 8601 with a UTC offset (or an aware datetime, or
seconds since the Unix epoch). Writes are idempotent on (sensor, quantity, ts, band):
a repeated reading is accepted and stored once (the first value wins), so loggers can
resend buffered data freely; late and out-of-order readings are stored like any other
and mark their rollup buckets for recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from numbers import Real
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from instrument_env.limits import ANY_BAND, MAX_BAND, EnvConfig, load_env_config
from instrument_env.models import DirtyRange, Reading, now_utc, to_us

#: Readings further in the future than this (clock skew allowance) are rejected.
MAX_FUTURE_S = 300.0
REQUIRED = ("sensor", "quantity", "ts", "value", "unit")
#: Rows per INSERT statement (keeps PostgreSQL parameter counts well below 65535).
CHUNK = 5000


@dataclass
class IngestResult:
    accepted: int
    rejected: list[dict] = field(default_factory=list)  # [{"index", "reason"}]

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": list(self.rejected)}


class _Bad(Exception):
    pass


def parse_ts(ts: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 (with offset), an aware datetime or epoch seconds."""
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            raise _Bad(f"ts {ts!r} is not ISO 8601") from None
    elif isinstance(ts, datetime):
        parsed = ts
    elif isinstance(ts, Real) and not isinstance(ts, bool) and math.isfinite(ts):
        return datetime.fromtimestamp(float(ts), UTC)
    else:
        raise _Bad(f"ts {ts!r} is not a timestamp")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _Bad(f"ts {ts!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _band(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str and 0 < len(value) <= 16 and value not in (MAX_BAND, ANY_BAND):
        return value
    if isinstance(value, bool):
        raise _Bad(f"band {value!r} is not a band label")
    if isinstance(value, Real):
        return f"{float(value):g}"
    if isinstance(value, str) and 0 < len(value) <= 16:
        if value in (MAX_BAND, ANY_BAND):
            raise _Bad(f"band {value!r} is reserved")
        return value
    raise _Bad(f"band {value!r} is not a band label")


def validate_reading(item: Any, config: EnvConfig, latest_us: int) -> dict:
    """One row for ``env_readings`` from one reading dict, or raise _Bad with the reason."""
    if type(item) is not dict and not isinstance(item, dict):
        raise _Bad(f"expected an object, got {type(item).__name__}")
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise _Bad(f"missing {', '.join(repr(k) for k in missing)}")
    sensor_id = item["sensor"]
    sensor = config.sensors.get(sensor_id) if type(sensor_id) is str else None
    if sensor is None:
        raise _Bad(f"unknown sensor {item['sensor']!r}")
    quantity = item["quantity"]
    if quantity not in sensor.quantities:
        raise _Bad(
            f"sensor {sensor.id!r} does not report {quantity!r} "
            f"(it reports {', '.join(sensor.quantities)})"
        )
    expected_unit = config.units.get(quantity)
    if expected_unit is not None and item["unit"] != expected_unit:
        raise _Bad(f"unit {item['unit']!r} for {quantity} (expected {expected_unit!r})")
    value = item["value"]
    kind = type(value)  # exact type checks first: the ABC check is slow at 10^5/s
    if not (kind is float or kind is int) and (
        isinstance(value, bool) or not isinstance(value, Real)
    ):
        raise _Bad(f"value {value!r} is not a finite number")
    if not math.isfinite(value):
        raise _Bad(f"value {value!r} is not a finite number")
    ts_us = to_us(parse_ts(item["ts"]))
    if ts_us > latest_us:
        raise _Bad(f"ts {item['ts']!r} is in the future")
    return {
        "sensor": sensor.id,
        "quantity": quantity,
        "ts_us": ts_us,
        "band": _band(item.get("band")),
        "value": float(value),
        "unit": item["unit"],
    }


def ingest_readings(
    session: Session,
    readings: list[dict],
    *,
    source: str,
    config: EnvConfig | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Validate and store a batch; malformed readings are rejected with a reason.

    Adds to ``session`` without committing (the caller owns the transaction).
    Returns ``IngestResult(accepted, rejected=[{"index", "reason"}])``; ``accepted``
    counts valid readings, including repeats of readings already stored.
    """
    config = config or load_env_config()
    latest_us = to_us((now or now_utc()) + timedelta(seconds=MAX_FUTURE_S))
    rows: dict[tuple, dict] = {}
    rejected: list[dict] = []
    bad_indices: set[int] = set()
    good_indices: set[int] = set()
    source = source[:32]
    for index, item in _expanded(readings, config, rejected):
        try:
            row = validate_reading(item, config, latest_us)
        except (_Bad, TypeError, ValueError, OverflowError) as exc:
            if index not in bad_indices:  # one reason per input reading
                bad_indices.add(index)
                reason = str(exc) if isinstance(exc, _Bad) else f"invalid reading: {exc}"
                rejected.append({"index": index, "reason": reason})
            continue
        good_indices.add(index)
        row["source"] = source
        rows.setdefault((row["sensor"], row["quantity"], row["ts_us"], row["band"]), row)
    if rows:
        _insert_ignore(session, list(rows.values()))
        _upsert_band_max(session, rows.values())
        _mark_dirty(session, rows.values())
    rejected.sort(key=lambda r: r["index"])
    bad_indices.update(r["index"] for r in rejected)  # includes raw readings that failed
    return IngestResult(accepted=len(good_indices - bad_indices), rejected=rejected)


_COLUMNS = ("sensor", "quantity", "ts_us", "band", "value", "unit", "source")


def _expanded(readings: list, config: EnvConfig, rejected: list[dict]):
    """(index, reading) pairs, raw-sample readings reduced to stored readings first."""
    for index, item in enumerate(readings):
        if type(item) is dict and "raw" in item:
            from instrument_env.reduce import expand_raw_reading

            sensor = (
                config.sensors.get(item.get("sensor"))
                if isinstance(item.get("sensor"), str)
                else None
            )
            if sensor is None:
                rejected.append(
                    {"index": index, "reason": f"unknown sensor {item.get('sensor')!r}"}
                )
                continue
            try:
                reduced = expand_raw_reading(item, sensor.quantities, config.mains_frequency_Hz)
            except ValueError as exc:
                rejected.append({"index": index, "reason": str(exc)})
                continue
            for reading in reduced:
                yield index, reading
        else:
            yield index, item


def _insert_ignore(session: Session, rows: list[dict]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql" and _copy_insert_ignore(session, rows):
        return
    if dialect == "sqlite":
        # the DB-API directly: the ORM bulk-insert path costs more than SQLite itself
        driver = session.connection().connection.driver_connection
        driver.executemany(
            f"INSERT OR IGNORE INTO env_readings ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [tuple(row[c] for c in _COLUMNS) for row in rows],
        )
        return
    if dialect != "postgresql":  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"instrument_env does not support {dialect}")
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(Reading).on_conflict_do_nothing()
    for start in range(0, len(rows), CHUNK):
        session.execute(statement, rows[start : start + CHUNK])


def _copy_insert_ignore(session: Session, rows: list[dict]) -> bool:
    """PostgreSQL: COPY, the fastest way in; duplicates handled without losing the batch.

    First COPY straight into ``env_readings`` inside a savepoint (new readings, the usual
    case). If any reading is already stored (unique violation), roll the savepoint back
    and COPY into a temporary table followed by INSERT ... ON CONFLICT DO NOTHING.
    Returns False when the driver is not psycopg 3 (the caller then inserts row by row).
    """
    driver = session.connection().connection.driver_connection
    if not hasattr(driver, "cursor") or not hasattr(driver.cursor(), "copy"):
        return False
    import psycopg

    columns = ", ".join(_COLUMNS)
    tuples = [tuple(row[c] for c in _COLUMNS) for row in rows]
    with driver.cursor() as cursor:
        cursor.execute("SAVEPOINT env_ingest_copy")
        try:
            with cursor.copy(f"COPY env_readings ({columns}) FROM STDIN") as copy:
                for row in tuples:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT env_ingest_copy")
        else:
            cursor.execute("RELEASE SAVEPOINT env_ingest_copy")
            return True
        cursor.execute("RELEASE SAVEPOINT env_ingest_copy")
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS env_ingest_batch "
            "(LIKE env_readings) ON COMMIT DELETE ROWS"
        )
        cursor.execute("DELETE FROM env_ingest_batch")
        with cursor.copy(f"COPY env_ingest_batch ({columns}) FROM STDIN") as copy:
            for row in tuples:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO env_readings ({columns}) SELECT {columns} FROM env_ingest_batch "
            "ON CONFLICT DO NOTHING"
        )
        cursor.execute("DELETE FROM env_ingest_batch")
    return True


def _upsert_band_max(session: Session, rows) -> None:
    """Keep a ``max`` band row per (sensor, quantity, ts) of banded readings.

    Rules over every band (e.g. vibration per one-third-octave band) then read one row
    per time instead of one per band. The row is recomputed from the stored band rows
    of the batch's time span, so bands arriving in several batches, resends and
    duplicates all leave it equal to the largest stored band value.
    """
    spans: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if not row["band"]:
            continue
        span = spans.setdefault((row["sensor"], row["quantity"]), [row["ts_us"], row["ts_us"]])
        span[0] = min(span[0], row["ts_us"])
        span[1] = max(span[1], row["ts_us"])
    for (sensor, quantity), (lo, hi) in spans.items():
        session.execute(
            _BAND_MAX_SQL,
            {"sensor": sensor, "quantity": quantity, "lo": lo, "hi": hi},
        )


_BAND_MAX_SQL = sa.text(
    "INSERT INTO env_readings (sensor, quantity, ts_us, band, value, unit, source) "
    f"SELECT sensor, quantity, ts_us, '{MAX_BAND}', MAX(value), MIN(unit), MIN(source) "
    "FROM env_readings WHERE sensor = :sensor AND quantity = :quantity "
    f"AND ts_us >= :lo AND ts_us <= :hi AND band <> '' AND band <> '{MAX_BAND}' "
    "GROUP BY sensor, quantity, ts_us "
    "ON CONFLICT (sensor, quantity, ts_us, band) DO UPDATE SET value = excluded.value"
)


def _mark_dirty(session: Session, rows) -> None:
    spans: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        span = spans.get((row["sensor"], row["quantity"]))
        if span is None:
            spans[(row["sensor"], row["quantity"])] = [row["ts_us"], row["ts_us"]]
        elif row["ts_us"] < span[0]:
            span[0] = row["ts_us"]
        elif row["ts_us"] > span[1]:
            span[1] = row["ts_us"]
    session.execute(
        sa.insert(DirtyRange),
        [
            {"sensor": s, "quantity": q, "start_us": lo, "end_us": hi}
            for (s, q), (lo, hi) in spans.items()
        ],
    )
