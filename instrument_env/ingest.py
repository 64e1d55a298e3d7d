"""Batch ingest of readings: validate each, keep the good ones, say why the others failed.

One reading is ``{"sensor", "quantity", "ts", "value", "unit"}`` (+ optional ``"band"``),
as in CONTRACT.md. ``ts`` is ISO 8601 with a UTC offset (or an aware datetime, or
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

from instrument_env.limits import EnvConfig, load_env_config
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
    if isinstance(value, bool):
        raise _Bad(f"band {value!r} is not a band label")
    if isinstance(value, Real):
        return f"{float(value):g}"
    if isinstance(value, str) and 0 < len(value) <= 16:
        return value
    raise _Bad(f"band {value!r} is not a band label")


def validate_reading(item: Any, config: EnvConfig, latest_us: int) -> dict:
    """One row for ``env_readings`` from one reading dict, or raise _Bad with the reason."""
    if not isinstance(item, dict):
        raise _Bad(f"expected an object, got {type(item).__name__}")
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise _Bad(f"missing {', '.join(repr(k) for k in missing)}")
    sensor = config.sensors.get(item["sensor"]) if isinstance(item["sensor"], str) else None
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
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
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
    accepted = 0
    source = source[:32]
    for index, item in enumerate(readings):
        try:
            row = validate_reading(item, config, latest_us)
        except _Bad as exc:
            rejected.append({"index": index, "reason": str(exc)})
            continue
        except (TypeError, ValueError, OverflowError) as exc:
            rejected.append({"index": index, "reason": f"invalid reading: {exc}"})
            continue
        accepted += 1
        row["source"] = source
        rows.setdefault((row["sensor"], row["quantity"], row["ts_us"], row["band"]), row)
    if rows:
        _insert_ignore(session, list(rows.values()))
        _mark_dirty(session, rows.values())
    return IngestResult(accepted=accepted, rejected=rejected)


def _insert_ignore(session: Session, rows: list[dict]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"instrument_env does not support {dialect}")
    statement = insert(Reading).on_conflict_do_nothing()
    for start in range(0, len(rows), CHUNK):
        session.execute(statement, rows[start : start + CHUNK])


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
