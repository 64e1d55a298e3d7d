"""Rooms and instruments from config/facility.yaml into the database (idempotent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from portal.domain import audit
from portal.models import Instrument, Room

INSTRUMENT_FIELDS = (
    "name",
    "kind",
    "room_id",
    "requires_approval",
    "environment_gated",
    "min_duration_h",
    "max_duration_h",
    "lead_time_h",
    "cancellation_deadline_h",
    "horizon_days",
)


def load_facility_into_db(db: Session, facility: Mapping[str, Any]) -> tuple[int, int]:
    """Insert or update every room and instrument of a validated facility description.

    Instruments are keyed by their config id (e.g. ``krios1``); instruments no longer
    in the config are marked inactive, never deleted (bookings refer to them).
    Returns (rooms, instruments) loaded.
    """
    for room in facility.get("rooms", []):
        existing = db.get(Room, room["id"])
        if existing is None:
            db.add(Room(id=room["id"], name=room.get("name", room["id"])))
        else:
            existing.name = room.get("name", room["id"])
    db.flush()
    seen = set()
    for item in facility.get("instruments", []):
        rules = item.get("booking", {})
        values = {
            "name": item.get("name", item["id"]),
            "kind": item["kind"],
            "room_id": item["room"],
            "requires_approval": bool(item.get("requires_approval", False)),
            "environment_gated": bool(item.get("environment_gated", False)),
            "min_duration_h": float(rules.get("min_duration_h", 0.5)),
            "max_duration_h": float(rules.get("max_duration_h", 72)),
            "lead_time_h": float(rules.get("lead_time_h", 0)),
            "cancellation_deadline_h": float(rules.get("cancellation_deadline_h", 0)),
            "horizon_days": float(rules.get("horizon_days", 365)),
        }
        seen.add(item["id"])
        instrument = db.get(Instrument, item["id"])
        if instrument is None:
            instrument = Instrument(id=item["id"], active=True, **values)
            db.add(instrument)
            audit.record(db, None, "create", "instrument", item["id"], after=values)
            continue
        before = audit.snapshot(instrument, INSTRUMENT_FIELDS)
        for key, value in values.items():
            setattr(instrument, key, value)
        instrument.active = True
        after = audit.snapshot(instrument, INSTRUMENT_FIELDS)
        if before != after:
            audit.record(db, None, "update", "instrument", item["id"], before, after)
    for instrument in db.query(Instrument).filter(Instrument.id.notin_(seen)).all():
        instrument.active = False
    db.flush()
    return len(facility.get("rooms", [])), len(seen)
