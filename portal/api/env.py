"""instrument_env's routes on ``/api/v1`` (CONTRACT.md): readings, gate, alarms.

Thin views: validation and decisions live in :mod:`instrument_env`; this module maps
its errors to the API's JSON errors (unknown instrument or alarm → 404, alarm in the
wrong state → 409, malformed request → 400/422).

- ``POST /api/v1/env/readings`` (technician, staff, admin) → ``202 {"accepted", "rejected"}``
- ``GET /api/v1/instruments/ID/gate`` (any user) → ``{"allowed", "reasons", "checked_at"}``
- ``GET /api/v1/alarms?state=`` (any user) → alarms, newest first
- ``POST /api/v1/alarms/ID/ack`` ``{"comment"}`` (technician, staff, admin) → the alarm
"""

from __future__ import annotations

from flask import g, jsonify, request

from portal.api import bp, json_body, token_required
from portal.db import get_db
from portal.domain.errors import Conflict, InvalidInput, NotFound, PortalError
from portal.domain.permissions import OPERATOR_ROLES
from portal.facility import env_config

#: Largest batch accepted in one request (a logger's buffer after a long outage fits).
MAX_READINGS = 50_000


class Unprocessable(PortalError):
    status = 422
    code = "unprocessable"


@bp.post("/env/readings")
@token_required(roles=OPERATOR_ROLES)
def post_readings():
    from instrument_env.ingest import ingest_readings

    data = request.get_json(silent=True)
    if not isinstance(data, list):
        raise InvalidInput("request body must be a JSON array of readings")
    if len(data) > MAX_READINGS:
        raise InvalidInput(f"too many readings in one request ({len(data)} > {MAX_READINGS})")
    db = get_db()
    result = ingest_readings(db, data, source=f"api:{g.user.username}"[:32], config=env_config())
    db.commit()
    response = jsonify(result.to_dict())
    response.status_code = 202
    return response


@bp.get("/instruments/<instrument_id>/gate")
@token_required()
def get_gate(instrument_id: str):
    from instrument_env.gate import evaluate_gate
    from instrument_env.limits import UnknownInstrument

    db = get_db()
    try:
        decision = evaluate_gate(db, instrument_id, config=env_config())
    except UnknownInstrument as exc:
        raise NotFound(str(exc)) from None
    finally:
        db.rollback()  # the gate only reads
    return jsonify(decision.to_dict())


@bp.get("/alarms")
@token_required()
def get_alarms():
    from instrument_env.alarms import InvalidAlarmRequest, list_alarms

    state = request.args.get("state") or None
    room = request.args.get("room") or None
    try:
        alarms = list_alarms(get_db(), state, room=room)
    except InvalidAlarmRequest as exc:
        raise Unprocessable(str(exc)) from None
    return jsonify([alarm.to_dict() for alarm in alarms])


@bp.post("/alarms/<int:alarm_id>/ack")
@token_required(roles=OPERATOR_ROLES)
def post_ack(alarm_id: int):
    from instrument_env.alarms import (
        AlarmNotFound,
        AlarmStateConflict,
        InvalidAlarmRequest,
        acknowledge,
    )

    comment = json_body().get("comment")
    if not isinstance(comment, str):
        raise Unprocessable("comment must be a string")
    db = get_db()
    try:
        alarm = acknowledge(db, alarm_id, g.user.username, comment)
    except AlarmNotFound as exc:
        raise NotFound(str(exc)) from None
    except AlarmStateConflict as exc:
        raise Conflict(str(exc)) from None
    except InvalidAlarmRequest as exc:
        raise Unprocessable(str(exc)) from None
    db.commit()
    return jsonify(alarm.to_dict())
