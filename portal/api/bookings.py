"""Bookings: ``POST/GET /api/v1/bookings``, ``GET/DELETE /api/v1/bookings/ID``, staff decisions."""

from __future__ import annotations

from datetime import datetime

from flask import g, jsonify, request

from portal.api.common import body_field, bp, json_body, parse_int, parse_time, token_required
from portal.api.schemas import ISO_TIME
from portal.api.spec import array_of, empty, error, ok, operation, query
from portal.db import get_db
from portal.domain import bookings as booking_rules
from portal.domain import permissions


def _slot_request(data: dict) -> tuple[str, int, datetime, datetime]:
    """(instrument_id, project_id, start, end) of a booking or waiting-list request."""
    return (
        body_field(data, "instrument_id", str, "a string"),
        parse_int(data.get("project_id"), "project_id"),
        parse_time(data.get("start"), "start"),
        parse_time(data.get("end"), "end"),
    )


@bp.post("/bookings")
@operation(
    {
        201: ok("Booking", "booked"),
        400: error("malformed request"),
        403: error("not allowed to book for this project"),
        404: error("no such instrument or project"),
        409: error("overlaps another booking or a maintenance block"),
        422: error("breaks a booking rule (the message says which)"),
    },
    summary="Book an instrument for a project",
    body="BookingRequest",
)
@token_required()
def create_booking():
    data = json_body()
    for_booking_id = data.get("for_booking_id")
    db = get_db()
    booking = booking_rules.create_booking(
        db,
        g.user,
        *_slot_request(data),
        for_booking_id=parse_int(for_booking_id, "for_booking_id")
        if for_booking_id is not None
        else None,
        note=str(data.get("note", "")),
    )
    db.commit()
    return jsonify(booking.as_dict()), 201


@bp.get("/bookings")
@operation(
    {200: ok(array_of("Booking")), 400: error("malformed query")},
    summary="Bookings visible to the caller",
    parameters=[
        query("instrument_id", {"type": "string"}),
        query("start", ISO_TIME),
        query("end", ISO_TIME),
    ],
)
@token_required()
def list_bookings():
    args = request.args
    start = parse_time(args["start"], "start") if args.get("start") else None
    end = parse_time(args["end"], "end") if args.get("end") else None
    limit = min(parse_int(args.get("limit", 1000), "limit"), 5000)  # 1 or more
    rows = booking_rules.visible_bookings(
        get_db(),
        g.user,
        args.get("instrument_id") or None,
        start,
        end,
        max(limit, 1),
        with_project=False,  # as_dict() does not show the project
    )
    return jsonify([b.as_dict() for b in rows])


@bp.get("/bookings/<int:booking_id>")
@operation({200: ok("Booking"), 404: error("not found")})
@token_required()
def get_booking(booking_id: int):
    return jsonify(permissions.visible_booking(get_db(), g.user, booking_id).as_dict())


@bp.delete("/bookings/<int:booking_id>")
@operation(
    {
        204: empty("cancelled"),
        403: error("not allowed to cancel"),
        404: error("not found"),
        409: error("past the cancellation deadline"),
    }
)
@token_required()
def cancel_booking(booking_id: int):
    db = get_db()
    booking = permissions.visible_booking(db, g.user, booking_id)
    booking_rules.cancel_booking(db, g.user, booking)
    db.commit()
    return "", 204


@bp.post("/bookings/<int:booking_id>/decision")
@operation(
    {
        200: ok("Booking", "decided"),
        400: error("malformed request"),
        403: error("staff only"),
        404: error("not found"),
        409: error("the booking is not pending"),
    },
    summary="Staff approve or reject a pending booking",
    body="Decision",
)
@token_required(roles=permissions.STAFF_ROLES)
def decide_booking(booking_id: int):
    data = json_body()
    approve = body_field(data, "approve", bool, "true or false")
    db = get_db()
    booking = permissions.visible_booking(db, g.user, booking_id)
    booking_rules.decide(db, g.user, booking, approve, str(data.get("reason", "")))
    db.commit()
    return jsonify(booking.as_dict())


@bp.post("/waitlist")
@operation(
    {
        201: ok("WaitlistEntry", "on the waiting list"),
        400: error("malformed request"),
        403: error("not a member of the project"),
        404: error("no such instrument or project"),
    },
    summary="Ask to be offered a taken slot if it is freed",
    body="WaitlistRequest",
)
@token_required()
def join_waitlist():
    db = get_db()
    entry = booking_rules.join_waitlist(db, g.user, *_slot_request(json_body()))
    db.commit()
    return jsonify({"id": entry.id, "state": entry.state}), 201
