"""Batch ingest of readings: validate each, keep the good ones, say why the others failed.

One reading is ``{"sensor", "quantity", "ts", "value", "unit"}`` (+ optional ``"band"``),
as in CONTRACT.md. A reading may instead carry raw samples of a high-rate sensor
(``"raw": {"sample_rate_Hz", "samples"}`` with quantity ``vibration`` or
``magnetic_field``); it is reduced by :func:`instrument_env.reduce.expand_raw_reading`
to band velocities or mains-frequency RMS and DC field before validation. ``ts`` is ISO 8601 with a UTC offset (or an aware datetime, or
seconds since the Unix epoch). Writes are idempotent on (sensor, quantity, ts, band):
a repeated reading with the same value is accepted and stored once, so loggers can
resend buffered data freely; the same key with another value is a conflict (refused,
counted, alarmed as a second publisher; the stored value stays). Late and out-of-order
readings are stored like any other and mark their rollup buckets for recomputation.

Refused readings (malformed, control characters, implausible for the quantity, outside
the clock bounds of ``limits.yaml`` ``ingest:``, conflicts) are kept with their reason
and kind in ``env_rejected_readings``: nothing sent is lost, and none enters the series.
"""

from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Real
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from instrument_env.limits import ANY_BAND, MAX_BAND, EnvConfig, load_env_config
from instrument_env.models import (
    BAND_SEPARATOR,
    DirtyRange,
    Reading,
    RejectedReading,
    from_us,
    now_utc,
    to_us,
)
from instrument_env.storage import driver_fetchall

#: Readings further in the future than this are rejected when no configuration says
#: otherwise (limits.yaml ``ingest.max_future_s``; seconds).
MAX_FUTURE_S = 5.0
#: Readings before this instant are refused whatever the configuration (a logger that
#: lost its clock reports 1970): 2000-01-01T00:00:00Z in µs since the epoch.
EARLIEST_US = 946_684_800_000_000
REQUIRED = ("sensor", "quantity", "ts", "value", "unit")
#: Rows per INSERT statement (keeps PostgreSQL parameter counts well below 65535).
CHUNK = 5000
#: ASCII control characters (NUL included): refused in any text field of a reading.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: Longest payload kept of a rejected reading (characters of its JSON).
PAYLOAD_CHARS = 2000


@dataclass
class IngestResult:
    """What became of a batch: ``accepted`` readings (repeats of stored readings
    included) and ``rejected`` ``[{"index", "reason", "kind"}]`` (``kind``: invalid,
    implausible, conflict or clock; ``index`` into the batch as given)."""

    accepted: int
    rejected: list[dict] = field(default_factory=list)  # [{"index", "reason", "kind"}]
    conflicts: int = 0

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": list(self.rejected)}

    def counts_by_kind(self) -> dict[str, int]:
        """Rejected readings per kind, e.g. ``{"implausible": 3, "invalid": 1}``."""
        counts: dict[str, int] = {}
        for entry in self.rejected:
            counts[entry.get("kind", "invalid")] = counts.get(entry.get("kind", "invalid"), 0) + 1
        return counts


class _Bad(Exception):
    """A refused reading: ``kind`` says which way, ``row`` what could be read of it."""

    def __init__(self, reason: str, kind: str = "invalid", row: dict | None = None):
        super().__init__(reason)
        self.kind = kind
        self.row = row or {}


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
        try:
            return datetime.fromtimestamp(float(ts), UTC)
        except (OverflowError, OSError, ValueError):
            raise _Bad(f"ts {ts!r} is out of range", "clock") from None
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
        if not math.isfinite(value):
            raise _Bad(f"band {value!r} is not a band label")
        return f"{float(value):g}"
    if isinstance(value, str) and 0 < len(value) <= 16:
        if value in (MAX_BAND, ANY_BAND):
            raise _Bad(f"band {value!r} is reserved")
        return value
    raise _Bad(f"band {value!r} is not a band label")


def _check_text(item: dict) -> None:
    for key in ("sensor", "quantity", "unit", "ts", "band"):
        value = item.get(key)
        if type(value) is str and _CONTROL.search(value):
            raise _Bad(f"{key} holds a control character ({ascii(value)[:60]})")


def _check_channel(item: dict, config: EnvConfig) -> tuple:
    """(sensor id, quantity, band label, plausibility) of a reading's channel, or _Bad:
    control characters, unknown sensor, a quantity it does not report, a wrong unit,
    a band that is not a label."""
    _check_text(item)
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
    if type(item["unit"]) is not str or len(item["unit"]) > 16:
        raise _Bad(f"unit {item['unit']!r} is not a unit")
    return sensor.id, quantity, _band(item.get("band")), config.plausibility_of(quantity)


def validate_reading(
    item: Any,
    config: EnvConfig,
    latest_us: int,
    *,
    earliest_us: int = EARLIEST_US,
    channels: dict | None = None,
) -> dict:
    """One row for ``env_readings`` from one reading dict, or raise _Bad with the reason.

    Refused: anything but an object with the CONTRACT fields; text with control
    characters; an unknown sensor, a quantity the sensor does not measure, another unit
    than the quantity's; a value that is not a finite number or not plausible for the
    quantity (:class:`~instrument_env.limits.Plausibility`); a time after ``latest_us``
    or before ``earliest_us`` (µs since the epoch).

    ``channels``: a cache of the checks of (sensor, quantity, unit, band) for one batch
    (a logger sends many readings of few channels: each channel is checked once).
    """
    if type(item) is not dict and not isinstance(item, dict):
        raise _Bad(f"expected an object, got {type(item).__name__}")
    try:
        key = (item["sensor"], item["quantity"], item["unit"], item.get("band"), item["ts"])
        item["value"]
    except KeyError:
        missing = [k for k in REQUIRED if k not in item]
        raise _Bad(f"missing {', '.join(repr(k) for k in missing)}") from None
    ts = key[4]
    if type(ts) is str and _CONTROL.search(ts):
        raise _Bad(f"ts holds a control character ({ascii(ts)[:60]})")
    key = key[:4]
    hashable = type(key[0]) is str and type(key[1]) is str and type(key[2]) is str
    if channels is not None and hashable and (key[3] is None or type(key[3]) is str):
        checked = channels.get(key)
        if checked is None:
            checked = channels[key] = _check_channel(item, config)
    else:
        checked = _check_channel(item, config)
    sensor, quantity, band, plausible = checked
    value = item["value"]
    kind = type(value)  # exact type checks first: the ABC check is slow at 10^5/s
    if not (kind is float or kind is int) and (
        isinstance(value, bool) or not isinstance(value, Real)
    ):
        raise _Bad(f"value {value!r} is not a finite number")
    if not math.isfinite(value):
        raise _Bad(f"value {value!r} is not a finite number")
    ts_us = to_us(parse_ts(ts))
    row = {
        "sensor": sensor,
        "quantity": quantity,
        "ts_us": ts_us,
        "band": band,
        "value": float(value),
        "unit": item["unit"],
    }
    if ts_us > latest_us:
        ahead = (ts_us - latest_us) / 1e6
        raise _Bad(
            f"ts {item['ts']!r} is in the future (beyond the allowed clock skew by {ahead:.0f} s)",
            "clock",
            row,
        )
    if ts_us < earliest_us:
        raise _Bad(
            f"ts {item['ts']!r} is implausibly old (before {from_us(earliest_us).date()})",
            "clock",
            row,
        )
    if plausible is not None:
        problem = plausible.problem(row["value"])
        if problem is not None:
            raise _Bad(f"{problem} for {quantity} ({item['unit']})", "implausible", row)
    return row


def ingest_readings(
    session: Session,
    readings: list[dict],
    *,
    source: str,
    config: EnvConfig | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Validate and store a batch; each reading is judged on its own.

    Adds to ``session`` without committing (the caller owns the transaction).
    Returns ``IngestResult(accepted, rejected=[{"index", "reason", "kind"}])``;
    ``accepted`` counts valid readings, including repeats of readings already stored
    with the same value. A reading with the same (sensor, quantity, ts, band) as a
    stored one and another value is a conflict: refused, kept in
    ``env_rejected_readings`` and raised as an alarm (``conflict:SENSOR``, a second
    publisher). Every refused reading is kept there with its reason.
    """
    config = config or load_env_config()
    now = now or now_utc()
    now_us = to_us(now)
    latest_us = now_us + int(config.ingest.max_future_s * 1e6)
    earliest_us = max(EARLIEST_US, now_us - int(config.ingest.max_age_days * 86_400e6))
    rows: dict[tuple, dict] = {}
    index_of: dict[tuple, list[int]] = {}
    rejected: list[dict] = []
    kept: list[dict] = []  # rows of env_rejected_readings
    bad_indices: set[int] = set()
    good_indices: set[int] = set()
    source = _CONTROL.sub("?", str(source))[:32]
    channels: dict = {}  # checked (sensor, quantity, unit, band) of this batch

    def refuse(index: int, item: Any, reason: str, kind: str, row: dict | None) -> None:
        if index in bad_indices:  # one reason per input reading
            return
        bad_indices.add(index)
        rejected.append({"index": index, "reason": reason, "kind": kind})
        kept.append(_rejected_row(item, reason, kind, row or {}, source, now))

    for index, item in _expanded(readings, config, refuse):
        try:
            row = validate_reading(
                item, config, latest_us, earliest_us=earliest_us, channels=channels
            )
        except _Bad as exc:
            refuse(index, item, str(exc), exc.kind, exc.row)
            continue
        except (TypeError, ValueError, OverflowError) as exc:
            refuse(index, item, f"invalid reading: {exc}", "invalid", None)
            continue
        key = (row["sensor"], row["quantity"], row["ts_us"], row["band"])
        first = rows.get(key)
        if first is not None and (first["value"] != row["value"] or first["unit"] != row["unit"]):
            refuse(
                index,
                item,
                _conflict_reason(row, first["value"], "earlier in this batch"),
                "conflict",
                row,
            )
            continue
        good_indices.add(index)
        row["source"] = source
        rows.setdefault(key, row)
        index_of.setdefault(key, []).append(index)
    conflicts = 0
    if rows:
        stored = _insert_checked(session, rows)
        for key, value in stored.items():
            row = rows.pop(key)
            for index in index_of[key]:
                refuse(
                    index, readings[index], _conflict_reason(row, value, "stored"), "conflict", row
                )
        conflicts = sum(1 for r in rejected if r["kind"] == "conflict")
        if rows:
            _upsert_band_max(session, rows.values())
            _mark_dirty(session, rows.values())
    else:
        conflicts = sum(1 for r in rejected if r["kind"] == "conflict")
    if kept:
        session.execute(sa.insert(RejectedReading), kept)
        if conflicts:
            _conflict_alarms(session, kept, config, now)
    rejected.sort(key=lambda r: r["index"])
    return IngestResult(
        accepted=len(good_indices - bad_indices), rejected=rejected, conflicts=conflicts
    )


def keep_refused(
    session: Session,
    refused: list[tuple[Any, str]],
    *,
    source: str,
    kind: str = "invalid",
    now: datetime | None = None,
) -> None:
    """Keep readings refused before validation — at the edge (control characters in an
    MQTT message) or unreadable (a CSV row that is not UTF-8) — in
    ``env_rejected_readings`` with their reason: ``(item, reason)`` each, the item as
    received (a dict, or the raw text), its kept text bounded to :data:`PAYLOAD_CHARS`.
    Adds to ``session`` without committing."""
    if not refused:
        return
    now = now or now_utc()
    source = _CONTROL.sub("?", str(source))[:32]
    rows = [_rejected_row(item, reason, kind, {}, source, now) for item, reason in refused]
    session.execute(sa.insert(RejectedReading), rows)


def _conflict_reason(row: dict, other: float, where: str) -> str:
    return (
        f"conflict: {row['sensor']} {row['quantity']}"
        + (f" band {row['band']}" if row["band"] else "")
        + f" at {from_us(row['ts_us']).isoformat()} has value {row['value']:g}, "
        f"{where} value {other:g} (a second publisher?)"
    )


def _text(value: Any, length: int) -> str:
    text = value if isinstance(value, str) else ("" if value is None else repr(value))
    return _CONTROL.sub("?", text)[:length]


def _rejected_row(item: Any, reason: str, kind: str, row: dict, source: str, now: datetime) -> dict:
    """A row of ``env_rejected_readings`` for a refused reading (text made storable)."""
    get = item.get if isinstance(item, dict) else (lambda _key: None)
    try:
        payload = json.dumps(item, ensure_ascii=True, default=repr)[:PAYLOAD_CHARS]
    except (ValueError, RecursionError):
        payload = _text(repr(item), PAYLOAD_CHARS)
    value = row.get("value", get("value"))
    return {
        "received_at": now,
        "source": source,
        "kind": kind,
        "sensor": _text(row.get("sensor", get("sensor")), 64),
        "quantity": _text(row.get("quantity", get("quantity")), 64),
        "ts_us": row.get("ts_us"),
        "band": _text(row.get("band", ""), 16),
        "value": float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else None,
        "reason": _text(reason, 1000),
        "payload": payload,
    }


def _conflict_alarms(session: Session, kept: list[dict], config: EnvConfig, now: datetime):
    """Raise (or add to) one open ``conflict:SENSOR`` alarm per sensor with conflicts."""
    from instrument_env.alarms import raise_conflict_alarm

    per_sensor: dict[str, int] = {}
    for row in kept:
        if row["kind"] == "conflict":
            per_sensor[row["sensor"]] = per_sensor.get(row["sensor"], 0) + 1
    for sensor_id, count in per_sensor.items():
        sensor = config.sensors.get(sensor_id)
        if sensor is not None:
            raise_conflict_alarm(session, sensor, count, now)


_COLUMNS = ("sensor", "quantity", "ts_us", "band", "value", "unit", "source")
_ROW_TUPLE = operator.itemgetter(*_COLUMNS)


def _expanded(readings: list, config: EnvConfig, refuse):
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
                refuse(index, item, f"unknown sensor {item.get('sensor')!r}", "invalid", None)
                continue
            try:
                reduced = expand_raw_reading(item, sensor.quantities, config.mains_frequency_Hz)
            except (ValueError, TypeError) as exc:
                refuse(index, item, str(exc), "invalid", None)
                continue
            if not reduced:
                refuse(
                    index,
                    item,
                    f"sensor {sensor.id!r} does not report anything derived from raw "
                    f"{item.get('quantity')!r} samples (it reports {', '.join(sensor.quantities)})",
                    "invalid",
                    None,
                )
                continue
            for reading in reduced:
                yield index, reading
        else:
            yield index, item


def _insert_checked(session: Session, rows: dict[tuple, dict]) -> dict[tuple, float]:
    """Insert new rows, skip exact repeats; return ``{key: stored value}`` of the rows
    that conflict with a stored reading (same key, another value), which are not stored."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        conflicts = _copy_insert_checked(session, list(rows.values()))
        if conflicts is not None:
            return conflicts
    elif dialect != "sqlite":  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"instrument_env does not support {dialect}")
    conflicts = {
        key: value
        for key, value in _stored_values(session, rows).items()
        if value != rows[key]["value"]
    }
    fresh = [row for key, row in rows.items() if key not in conflicts]
    if dialect == "sqlite":
        # the DB-API directly: the ORM bulk-insert path costs more than SQLite itself
        driver = session.connection().connection.driver_connection
        driver.executemany(
            f"INSERT OR IGNORE INTO env_readings ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            list(map(_ROW_TUPLE, fresh)),
        )
        return conflicts
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(Reading).on_conflict_do_nothing()
    for start in range(0, len(fresh), CHUNK):
        session.execute(statement, fresh[start : start + CHUNK])
    return conflicts


def _stored_values(session: Session, rows: dict[tuple, dict]) -> dict[tuple, float]:
    """Stored values of the keys of ``rows`` (one range read per channel of the batch)."""
    spans: dict[tuple[str, str], list[int]] = {}
    for sensor, quantity, ts_us, _band in rows:
        span = spans.setdefault((sensor, quantity), [ts_us, ts_us])
        span[0], span[1] = min(span[0], ts_us), max(span[1], ts_us)
    stored = {}
    for (sensor, quantity), (lo, hi) in spans.items():
        found = driver_fetchall(
            session,
            "SELECT ts_us, band, value FROM env_readings WHERE sensor = :sensor "
            "AND quantity = :quantity AND ts_us >= :lo AND ts_us <= :hi",
            {"sensor": sensor, "quantity": quantity, "lo": lo, "hi": hi},
        )
        for ts_us, band, value in found:
            key = (sensor, quantity, ts_us, band)
            if key in rows:
                stored[key] = value
    return stored


def _copy_insert_checked(session: Session, rows: list[dict]) -> dict[tuple, float] | None:
    """PostgreSQL: COPY, the fastest way in; duplicates handled without losing the batch.

    First COPY straight into ``env_readings`` inside a savepoint (new readings, the usual
    case). If any reading is already stored (unique violation), roll the savepoint back,
    COPY into a temporary table, INSERT ... ON CONFLICT DO NOTHING, and return the keys
    whose stored value differs from the batch's (conflicts). Returns None when the
    driver is not psycopg 3 (the caller then inserts row by row).
    """
    driver = session.connection().connection.driver_connection
    if not hasattr(driver, "cursor") or not hasattr(driver.cursor(), "copy"):
        return None
    import psycopg

    columns = ", ".join(_COLUMNS)
    tuples = list(map(_ROW_TUPLE, rows))
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
            return {}
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
        cursor.execute(
            "SELECT b.sensor, b.quantity, b.ts_us, b.band, r.value FROM env_ingest_batch b "
            "JOIN env_readings r ON r.sensor = b.sensor AND r.quantity = b.quantity "
            "AND r.ts_us = b.ts_us AND r.band = b.band WHERE r.value <> b.value"
        )
        conflicts = {tuple(found[:4]): found[4] for found in cursor.fetchall()}
        cursor.execute("DELETE FROM env_ingest_batch")
    return conflicts


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
    band_times = band_times_sql(session.get_bind().dialect.name)
    for (sensor, quantity), (lo, hi) in spans.items():
        span = {"sensor": sensor, "quantity": quantity, "lo": lo, "hi": hi}
        session.execute(_BAND_MAX_SQL, span)
        session.execute(sa.text(band_times), {**span, "sep": BAND_SEPARATOR})


_BAND_MAX_SQL = sa.text(
    "INSERT INTO env_readings (sensor, quantity, ts_us, band, value, unit, source) "
    f"SELECT sensor, quantity, ts_us, '{MAX_BAND}', MAX(value), MIN(unit), MIN(source) "
    "FROM env_readings WHERE sensor = :sensor AND quantity = :quantity "
    f"AND ts_us >= :lo AND ts_us <= :hi AND band <> '' AND band <> '{MAX_BAND}' "
    "GROUP BY sensor, quantity, ts_us "
    "ON CONFLICT (sensor, quantity, ts_us, band) DO UPDATE SET value = excluded.value"
)


def band_times_sql(dialect: str, span: bool = True) -> str:
    """SQL that (re)writes the :class:`~instrument_env.models.BandTimes` rows from the
    stored band rows (of ``:sensor``/``:quantity`` between ``:lo`` and ``:hi`` when
    ``span``, else of every channel), labels joined by ``:sep``. PostgreSQL orders the
    labels by code point (``COLLATE "C"``); SQLite reads them in its key's (binary)
    order. A label order other than the gate's would only send the gate to its exact
    count, never let a missing band pass."""
    where = "band <> '' AND band <> 'max'"
    if span:
        where += " AND sensor = :sensor AND quantity = :quantity AND ts_us >= :lo AND ts_us <= :hi"
    if dialect == "postgresql":
        labels, rows = 'string_agg(band, :sep ORDER BY band COLLATE "C")', "env_readings"
    else:
        labels = "group_concat(band, :sep)"
        rows = f"(SELECT * FROM env_readings WHERE {where} ORDER BY sensor, quantity, ts_us, band)"
    return (
        "INSERT INTO env_band_times (sensor, quantity, ts_us, bands) "
        f"SELECT sensor, quantity, ts_us, {labels} FROM {rows} WHERE {where} "
        "GROUP BY sensor, quantity, ts_us "
        "ON CONFLICT (sensor, quantity, ts_us) DO UPDATE SET bands = excluded.bands"
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
