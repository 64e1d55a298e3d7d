"""``GET /api/v1/instruments``: the facility's bookable instruments."""

from __future__ import annotations

import sqlalchemy as sa
from flask import jsonify

from portal.api.common import bp, token_required
from portal.api.spec import array_of, ok, operation
from portal.db import get_db
from portal.models import Instrument


@bp.get("/instruments")
@operation({200: ok(array_of("Instrument"))}, summary="The facility's bookable instruments")
@token_required()
def list_instruments():
    rows = get_db().scalars(
        sa.select(Instrument).where(Instrument.active.is_(True)).order_by(Instrument.id)
    )
    return jsonify(
        [
            {
                "id": i.id,
                "name": i.name,
                "kind": i.kind,
                "room": i.room_id,
                "requires_approval": i.requires_approval,
                "environment_gated": i.environment_gated,
                "booking": {
                    "min_duration_h": i.min_duration_h,
                    "max_duration_h": i.max_duration_h,
                    "lead_time_h": i.lead_time_h,
                    "cancellation_deadline_h": i.cancellation_deadline_h,
                },
            }
            for i in rows
        ]
    )
