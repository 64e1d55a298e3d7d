"""The declarations of the room-environment routes of :mod:`portal.api.env` (readings,
gate, alarms), applied to its view functions here rather than above them so that
module, which the environment work changes, stays as it is."""

from __future__ import annotations

from portal.api import env
from portal.api.schemas import ISO_TIME
from portal.api.spec import array_of, error, ok, operation, query

ALARM_STATES = ["pending", "firing", "acknowledged", "resolved", "open", "unacknowledged"]

operation(
    {
        202: ok("ReadingsAccepted", "accepted"),
        400: error(
            "not a JSON array, not valid JSON or UTF-8, or nested deeper than 8 "
            "(checked before parsing)"
        ),
        413: error(
            "body larger than the limit (32 MiB by default; refused before it is "
            "read whole) or more than 50,000 readings"
        ),
        503: error("the facility configuration cannot be read"),
    },
    summary="Ingest environment readings (idempotent per sensor, quantity, ts)",
    body=array_of("Reading"),
)(env.post_readings)

operation(
    {
        200: ok("Gate", "decided (allowed or refused, with reasons)"),
        404: error("no such instrument"),
        503: ok(
            "Gate",
            "could not decide (database unreachable or not answering within a "
            "few seconds, configuration broken): allowed is false, reasons say why",
        ),
    },
    summary="Whether the environment allows acquisition now, and why not",
)(env.get_gate)

operation(
    {
        200: ok(
            array_of("Alarm"),
            headers={
                "X-Total-Count": {
                    "description": "alarms matching the filters, all pages",
                    "schema": {"type": "integer"},
                },
                "Link": {
                    "description": 'the next page: <URL>; rel="next" (absent on the last page)',
                    "schema": {"type": "string"},
                },
            },
        ),
        422: error("unknown state or severity, or a bad limit/offset"),
    },
    summary="Alarms, newest first, one page at a time",
    parameters=[
        query(
            "state",
            {"enum": ALARM_STATES},
            "open: pending, firing or acknowledged; "
            "unacknowledged: fired and not acknowledged (firing or resolved since)",
        ),
        query("room", {"type": "string"}),
        query("sensor", {"type": "string"}),
        query("severity", {"enum": ["warning", "critical"]}),
        query("since", ISO_TIME, "started at or after (ISO 8601 with offset)"),
        query("until", ISO_TIME, "started at or before (ISO 8601 with offset)"),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        query("offset", {"type": "integer", "minimum": 0, "default": 0}),
    ],
)(env.get_alarms)

operation(
    {
        200: ok("Alarm", "acknowledged"),
        404: error("no such alarm"),
        409: error(
            "alarm cannot be acknowledged in its state (only a firing alarm, or "
            "one that fired and resolved unacknowledged)"
        ),
    },
    body="AckRequest",
)(env.post_ack)
