"""The JSON schemas of the API's bodies (OpenAPI 3.1 components, JSON Schema 2020-12).

Routes name them in their declarations (:func:`portal.api.spec.operation`); tests check
real responses against them (:func:`portal.openapi.validate_response`).
"""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
ISO_TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def obj(properties: dict, required: list[str] | None = None, closed: bool = False) -> dict:
    """An object schema; ``closed``: no other properties allowed."""
    schema: dict[str, Any] = {"type": "object"}
    if required is not None:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    schema["properties"] = properties
    return schema


SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": STRING,
                    "message": STRING,
                    "rule": {"type": "string", "description": "the booking rule broken (422)"},
                    "reasons": {
                        "type": "array",
                        "items": STRING,
                        "description": "why the environment gate is closed (409) or cannot decide (503)",
                    },
                },
                required=["code", "message"],
                closed=True,
            )
        },
        required=["error"],
        closed=True,
    ),
    "UserPublic": obj(
        {"id": INTEGER, "username": STRING, "full_name": STRING},
        required=["id", "username", "full_name"],
    ),
    "TokenRequest": obj(
        {"username": STRING, "password": STRING}, required=["username", "password"]
    ),
    "Token": obj(
        {"token": {"type": "string", "minLength": 20}, "user": _ref("UserPublic"), "role": STRING},
        required=["token"],
    ),
    "Instrument": obj(
        {
            "id": STRING,
            "name": STRING,
            "kind": STRING,
            "room": STRING,
            "requires_approval": BOOLEAN,
            "environment_gated": BOOLEAN,
            "booking": obj(
                {
                    "min_duration_h": NUMBER,
                    "max_duration_h": NUMBER,
                    "lead_time_h": NUMBER,
                    "cancellation_deadline_h": NUMBER,
                }
            ),
        },
        required=["id", "name", "kind", "room"],
    ),
    "BookingRequest": obj(
        {
            "instrument_id": STRING,
            "project_id": INTEGER,
            "start": ISO_TIME,
            "end": ISO_TIME,
            "for_booking_id": {"type": ["integer", "null"]},
            "note": STRING,
        },
        required=["instrument_id", "project_id", "start", "end"],
    ),
    "Booking": obj(
        {
            "id": INTEGER,
            "instrument_id": STRING,
            "project_id": INTEGER,
            "user": _ref("UserPublic"),
            "start": ISO_TIME,
            "end": ISO_TIME,
            "status": {"enum": ["pending", "confirmed", "rejected", "cancelled"]},
            "for_booking_id": {"type": ["integer", "null"]},
        },
        required=["id", "instrument_id", "project_id", "start", "end", "status"],
    ),
    "Session": obj(
        {
            "id": INTEGER,
            "booking_id": INTEGER,
            "instrument_id": STRING,
            "project_id": INTEGER,
            "state": {
                "enum": ["scheduled", "ready", "acquiring", "processing", "complete", "aborted"]
            },
            "start": ISO_TIME,
            "end": ISO_TIME,
            "started_at": NULLABLE_TIME,
            "ended_at": NULLABLE_TIME,
            "operator": {"oneOf": [{"type": "null"}, _ref("UserPublic")]},
            "raw_dir": {
                "type": ["string", "null"],
                "description": "server folder; shown to staff and technicians only (else null)",
            },
            "run_dir": {
                "type": ["string", "null"],
                "description": "server folder; shown to staff and technicians only (else null)",
            },
            "processing": _ref("Processing"),
            "allowed_transitions": array(STRING),
        },
        required=["id", "instrument_id", "project_id", "state", "start", "end"],
    ),
    "Processing": {
        "type": "object",
        "description": "progress of the session's run folder; {} before processing starts",
        "properties": {
            "state": {"enum": ["running", "idle", "complete", "failed", "unreadable"]},
            "updated_at": NULLABLE_TIME,
            "movies_seen": INTEGER,
            "movies_processed": INTEGER,
            "movies_failed": INTEGER,
            "backlog": INTEGER,
            "particles": INTEGER,
            "batches_done": INTEGER,
            "batches_total": INTEGER,
            "acquisition_rate_per_h": {"type": ["number", "null"]},
            "processing_rate_per_h": {"type": ["number", "null"]},
            "keeping_up": {"type": ["boolean", "null"]},
            "resolution_A": {"type": ["number", "null"], "description": "FSC 0.143, Å"},
            "b_factor": {"type": ["number", "null"]},
            "warnings": {
                "type": "array",
                "items": STRING,
                "description": "about the map, from the reconstruction (e.g. a doubtful start)",
            },
            "median_total_motion_A": {"type": ["number", "null"]},
            "median_defocus_A": {"type": ["number", "null"]},
            "median_ctf_max_resolution_A": {"type": ["number", "null"]},
            "median_particles_per_micrograph": {"type": ["number", "null"]},
            "error": STRING,
        },
    },
    "Decision": obj({"approve": BOOLEAN, "reason": STRING}, required=["approve"]),
    "WaitlistRequest": obj(
        {"instrument_id": STRING, "project_id": INTEGER, "start": ISO_TIME, "end": ISO_TIME},
        required=["instrument_id", "project_id", "start", "end"],
    ),
    "WaitlistEntry": obj(
        {"id": INTEGER, "state": {"enum": ["waiting", "offered", "accepted", "withdrawn"]}},
        required=["id", "state"],
    ),
    "TransitionRequest": obj(
        {"state": STRING, "reason": STRING, "override_gate": BOOLEAN}, required=["state"]
    ),
    "SessionAfterTransition": {
        "allOf": [
            _ref("Session"),
            obj(
                {
                    "gate": obj(
                        {"allowed": BOOLEAN, "reasons": array(STRING), "checked_at": NULLABLE_TIME},
                        required=["allowed", "reasons"],
                    )
                }
            ),
        ]
    },
    "File": obj(
        {
            "name": {"type": "string", "pattern": "^[^/]+$"},
            "kind": STRING,
            "label": STRING,
            "size": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "bytes; null for a manifest not built yet (built on request)",
            },
            "modified_at": NULLABLE_TIME,
            "url": STRING,
        },
        required=["name", "kind", "label", "size", "modified_at", "url"],
        closed=True,
    ),
    "FileList": obj(
        {"session_id": INTEGER, "files": array(_ref("File"))},
        required=["session_id", "files"],
        closed=True,
    ),
    "SignedLink": obj(
        {"url": STRING, "expires_at": ISO_TIME}, required=["url", "expires_at"], closed=True
    ),
    "Reading": obj(
        {
            "sensor": STRING,
            "quantity": STRING,
            "ts": ISO_TIME,
            "value": NUMBER,
            "unit": STRING,
            "band": {"type": ["string", "number"]},
        },
        required=["sensor", "quantity", "ts", "value", "unit"],
    ),
    "ReadingsAccepted": obj(
        {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": array(
                obj(
                    {
                        "index": INTEGER,
                        "reason": STRING,
                        "kind": {
                            "enum": ["invalid", "implausible", "conflict", "clock"],
                            "description": "why: malformed; outside the quantity's physical range or a no-value code; another value for a stored time (second publisher); too far ahead or implausibly old",
                        },
                    },
                    required=["index", "reason"],
                )
            ),
        },
        required=["accepted", "rejected"],
    ),
    "Gate": obj(
        {"allowed": BOOLEAN, "reasons": array(STRING), "checked_at": ISO_TIME},
        required=["allowed", "reasons", "checked_at"],
    ),
    "Alarm": obj(
        {
            "id": INTEGER,
            "rule_id": STRING,
            "room": STRING,
            "sensor": STRING,
            "quantity": STRING,
            "kind": STRING,
            "severity": STRING,
            "state": STRING,
            "message": STRING,
            "started_at": ISO_TIME,
            "acknowledged_at": NULLABLE_TIME,
            "acknowledged_by": {"type": ["string", "null"]},
            "ack_comment": {"type": ["string", "null"]},
            "resolved_at": NULLABLE_TIME,
        },
        required=["id", "room", "severity", "state", "message"],
    ),
    "AckRequest": obj({"comment": STRING}, required=["comment"]),
}
