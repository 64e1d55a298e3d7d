"""instrument_env's routes on ``/api/v1`` (CONTRACT.md): readings, gate, alarms.

Thin views: validation and decisions live in :mod:`instrument_env`; this module maps
its errors to the API's JSON errors (unknown instrument or alarm → 404, alarm in the
wrong state → 409, malformed request → 400/422, body too large → 413).

- ``POST /api/v1/env/readings`` (technician, staff, admin) → ``202 {"accepted", "rejected"}``;
  the body's size and JSON nesting are checked before it is parsed
  (:class:`~instrument_env.payload.PayloadLimits`; app config ``ENV_MAX_BODY_BYTES``).
- ``GET /api/v1/instruments/ID/gate`` (any user) → ``200 {"allowed", "reasons",
  "checked_at"}``, or ``503`` with the same body (``allowed: false``) when the gate could
  not decide (database unreachable or silent, configuration broken). Bounded in time:
  the token check and the decision run on instrument_env's own engine (connect timeout)
  under a deadline (``ENV_GATE_TIMEOUT_S``, default 3 s each).
- ``GET /api/v1/alarms?state=&room=&sensor=&severity=&since=&until=&limit=&offset=``
  (any user) → alarms, newest first, one page (``limit`` default 100, at most 1000);
  ``X-Total-Count`` and a ``Link: <…>; rel="next"`` header page through the rest.
- ``POST /api/v1/alarms/ID/ack`` ``{"comment"}`` (technician, staff, admin) → the alarm
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlencode

from flask import current_app, g, jsonify, request

from portal.api.common import bp, json_body, parse_time, token_required
from portal.db import get_db
from portal.domain.errors import Conflict, InvalidInput, NotFound, PortalError
from portal.domain.permissions import OPERATOR_ROLES
from portal.edge import screens_own_json
from portal.facility import env_config

#: Largest batch accepted in one request (a logger's buffer after a long outage fits).
MAX_READINGS = 50_000
#: Default bound (seconds) on the gate's token check and on its decision, each.
GATE_TIMEOUT_S = 3.0
ALARM_PAGE = 100
ALARM_PAGE_MAX = 1000


class Unprocessable(PortalError):
    status = 422
    code = "unprocessable"


class Unavailable(PortalError):
    status = 503
    code = "unavailable"


class PayloadTooLarge(PortalError):
    status = 413
    code = "too_large"


def _payload_limits():
    from instrument_env.payload import PayloadLimits

    return PayloadLimits(
        max_bytes=int(current_app.config.get("ENV_MAX_BODY_BYTES", PayloadLimits.max_bytes)),
        max_readings=MAX_READINGS,
    )


def _read_body(max_bytes: int) -> bytes:
    """The request body, refused (413) past ``max_bytes`` before more is read."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body of {length} bytes is larger than {max_bytes} bytes")
    body = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH as well
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    return body


@bp.post("/env/readings")
@screens_own_json  # one bad reading is refused on its own, the rest are kept
@token_required(roles=OPERATOR_ROLES)
def post_readings():
    from instrument_env.ingest import ingest_readings
    from instrument_env.payload import PayloadError, parse_readings_payload

    limits = _payload_limits()
    if not request.is_json:
        raise InvalidInput("request body must be a JSON array of readings (application/json)")
    try:
        data = parse_readings_payload(_read_body(limits.max_bytes), limits)
    except PayloadError as exc:
        if exc.code == "too_large":
            raise PayloadTooLarge(str(exc)) from None
        raise InvalidInput(str(exc)) from None
    if not isinstance(data, list):
        raise InvalidInput("request body must be a JSON array of readings")
    from cryofac.errors import ConfigError

    try:
        config = env_config()
    except ConfigError as exc:
        raise Unavailable(f"configuration cannot be read: {exc}") from None
    db = get_db()
    result = ingest_readings(db, data, source=f"api:{g.user.username}"[:32], config=config)
    db.commit()
    response = jsonify(result.to_dict())
    response.status_code = 202
    return response


def _gate_engine():
    """instrument_env's engine on the portal's database, with a connect timeout (kept
    apart from the portal's pool, so a hung portal connection cannot hold the gate)."""
    engine = current_app.extensions.get("cryofac.env_gate_engine")
    if engine is None:
        from instrument_env.db import make_engine
        from instrument_env.deadline import watch_engine

        timeout = float(current_app.config.get("ENV_GATE_TIMEOUT_S", GATE_TIMEOUT_S))
        engine = make_engine(current_app.config["DATABASE_URL"], connect_timeout_s=timeout)
        watch_engine(engine)
        current_app.extensions["cryofac.env_gate_engine"] = engine
    return engine


def _undecided(reason: str, checked_at=None):
    from instrument_env.models import now_utc

    response = jsonify(
        {
            "allowed": False,
            "reasons": [reason],
            "checked_at": (checked_at or now_utc()).isoformat(),
        }
    )
    response.status_code = 503
    return response


@bp.get("/instruments/<instrument_id>/gate")
def get_gate(instrument_id: str):
    """The gate's decision; 503 (refusing, with the reason) when it could not decide."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from cryofac.errors import ConfigError
    from instrument_env.deadline import bounded, deadline
    from instrument_env.gate import evaluate_gate
    from instrument_env.limits import UnknownInstrument, load_env_config
    from portal.domain.accounts import user_for_token
    from portal.domain.errors import Unauthorized

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing 'Authorization: Bearer TOKEN' header")
    timeout = float(current_app.config.get("ENV_GATE_TIMEOUT_S", GATE_TIMEOUT_S))
    try:
        config = load_env_config(current_app.config.get("FACILITY_CONFIG_DIR"))
    except ConfigError as exc:
        return _undecided(f"configuration cannot be read: {exc}")
    fired = None
    engine = _gate_engine()
    # the whole of it bounded too (the final rollback, the connection's reset): a
    # connection still waiting when the bound fires is discarded, never pooled again
    with bounded(2 * timeout + 1), Session(engine) as db:
        try:
            with deadline(db, timeout) as fired:
                g.user = user_for_token(db, token.strip())
            db.rollback()
        except sa.exc.SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
            if fired is not None and fired.is_set():
                detail = f"no answer within {timeout:g} s"
            return _undecided(f"database unavailable ({exc.__class__.__name__}: {detail})")
        try:
            decision = evaluate_gate(db, instrument_id, config=config, timeout_s=timeout)
        except UnknownInstrument as exc:
            raise NotFound(str(exc)) from None
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                db.rollback()  # the gate only reads (a silent database: discarded at close)
    if not decision.decided:
        return _undecided("; ".join(decision.reasons), decision.checked_at)
    return jsonify(decision.to_dict())


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text in (None, ""):
        return default
    try:
        value = int(text)
    except ValueError:
        raise Unprocessable(f"{name} must be an integer, got {text[:20]!r}") from None
    if not low <= value <= high:
        raise Unprocessable(f"{name} must be between {low} and {high}, got {value}")
    return value


@bp.get("/alarms")
@token_required()
def get_alarms():
    from instrument_env.alarms import InvalidAlarmRequest, count_alarms, list_alarms

    filters = {key: request.args.get(key) or None for key in ("room", "sensor", "severity")}
    for key in ("since", "until"):
        text = request.args.get(key)
        filters[key] = parse_time(text, key) if text else None
    state = request.args.get("state") or None
    limit = _int_arg("limit", ALARM_PAGE, 1, ALARM_PAGE_MAX)
    offset = _int_arg("offset", 0, 0, 10**9)
    db = get_db()
    try:
        alarms = list_alarms(db, state, limit=limit, offset=offset, **filters)
        total = count_alarms(db, state, **filters)
    except InvalidAlarmRequest as exc:
        raise Unprocessable(str(exc)) from None
    response = jsonify([alarm.to_dict() for alarm in alarms])
    response.headers["X-Total-Count"] = str(total)
    if offset + len(alarms) < total:
        args = {k: v for k, v in request.args.items() if k not in ("offset", "limit")}
        args.update(limit=limit, offset=offset + limit)
        response.headers["Link"] = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
    return response


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
