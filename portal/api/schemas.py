"""The JSON schemas of the API's bodies (OpenAPI 3.1 components, JSON Schema 2020-12).

Routes name them in their declarations (:func:`portal.api.spec.operation`); tests check
real responses against them (:func:`portal.openapi.validate_response`).
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


ISO_TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "rule": {"type": "string", "description": "the booking rule broken (422)"},
                    "reasons": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "why the environment gate is closed (409)",
                    },
                },
            }
        },
    },
    "UserPublic": {
        "type": "object",
        "required": ["id", "username", "full_name"],
        "properties": {
            "id": {"type": "integer"},
            "username": {"type": "string"},
            "full_name": {"type": "string"},
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
    },
    "Token": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string", "minLength": 20},
            "user": _ref("UserPublic"),
            "role": {"type": "string"},
        },
    },
    "Instrument": {
        "type": "object",
        "required": ["id", "name", "kind", "room"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "room": {"type": "string"},
            "requires_approval": {"type": "boolean"},
            "environment_gated": {"type": "boolean"},
            "booking": {
                "type": "object",
                "properties": {
                    "min_duration_h": {"type": "number"},
                    "max_duration_h": {"type": "number"},
                    "lead_time_h": {"type": "number"},
                    "cancellation_deadline_h": {"type": "number"},
                },
            },
        },
    },
    "BookingRequest": {
        "type": "object",
        "required": ["instrument_id", "project_id", "start", "end"],
        "properties": {
            "instrument_id": {"type": "string"},
            "project_id": {"type": "integer"},
            "start": ISO_TIME,
            "end": ISO_TIME,
            "for_booking_id": {"type": ["integer", "null"]},
            "note": {"type": "string"},
        },
    },
    "Booking": {
        "type": "object",
        "required": ["id", "instrument_id", "project_id", "start", "end", "status"],
        "properties": {
            "id": {"type": "integer"},
            "instrument_id": {"type": "string"},
            "project_id": {"type": "integer"},
            "user": _ref("UserPublic"),
            "start": ISO_TIME,
            "end": ISO_TIME,
            "status": {"enum": ["pending", "confirmed", "rejected", "cancelled"]},
            "for_booking_id": {"type": ["integer", "null"]},
        },
    },
    "Session": {
        "type": "object",
        "required": ["id", "instrument_id", "project_id", "state", "start", "end"],
        "properties": {
            "id": {"type": "integer"},
            "booking_id": {"type": "integer"},
            "instrument_id": {"type": "string"},
            "project_id": {"type": "integer"},
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
            "allowed_transitions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Processing": {
        "type": "object",
        "description": "progress of the session's run folder; {} before processing starts",
        "properties": {
            "state": {"enum": ["running", "idle", "complete", "failed", "unreadable"]},
            "updated_at": NULLABLE_TIME,
            "movies_seen": {"type": "integer"},
            "movies_processed": {"type": "integer"},
            "movies_failed": {"type": "integer"},
            "backlog": {"type": "integer"},
            "particles": {"type": "integer"},
            "batches_done": {"type": "integer"},
            "batches_total": {"type": "integer"},
            "acquisition_rate_per_h": {"type": ["number", "null"]},
            "processing_rate_per_h": {"type": ["number", "null"]},
            "keeping_up": {"type": ["boolean", "null"]},
            "resolution_A": {"type": ["number", "null"], "description": "FSC 0.143, Å"},
            "b_factor": {"type": ["number", "null"]},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "about the map, from the reconstruction (e.g. a doubtful start)",
            },
            "median_total_motion_A": {"type": ["number", "null"]},
            "median_defocus_A": {"type": ["number", "null"]},
            "median_ctf_max_resolution_A": {"type": ["number", "null"]},
            "median_particles_per_micrograph": {"type": ["number", "null"]},
            "error": {"type": "string"},
        },
    },
    "Decision": {
        "type": "object",
        "required": ["approve"],
        "properties": {"approve": {"type": "boolean"}, "reason": {"type": "string"}},
    },
    "WaitlistRequest": {
        "type": "object",
        "required": ["instrument_id", "project_id", "start", "end"],
        "properties": {
            "instrument_id": {"type": "string"},
            "project_id": {"type": "integer"},
            "start": ISO_TIME,
            "end": ISO_TIME,
        },
    },
    "WaitlistEntry": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
            "id": {"type": "integer"},
            "state": {"enum": ["waiting", "offered", "accepted", "withdrawn"]},
        },
    },
    "TransitionRequest": {
        "type": "object",
        "required": ["state"],
        "properties": {
            "state": {"type": "string"},
            "reason": {"type": "string"},
            "override_gate": {"type": "boolean"},
        },
    },
    "SessionAfterTransition": {
        "allOf": [
            {"$ref": "#/components/schemas/Session"},
            {
                "type": "object",
                "properties": {
                    "gate": {
                        "type": "object",
                        "required": ["allowed", "reasons"],
                        "properties": {
                            "allowed": {"type": "boolean"},
                            "reasons": {"type": "array", "items": {"type": "string"}},
                            "checked_at": NULLABLE_TIME,
                        },
                    }
                },
            },
        ]
    },
    "File": {
        "type": "object",
        "required": ["name", "kind", "label", "size", "modified_at", "url"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[^/]+$"},
            "kind": {"type": "string"},
            "label": {"type": "string"},
            "size": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "bytes; null for a manifest not built yet (built on request)",
            },
            "modified_at": NULLABLE_TIME,
            "url": {"type": "string"},
        },
    },
    "FileList": {
        "type": "object",
        "required": ["session_id", "files"],
        "additionalProperties": False,
        "properties": {
            "session_id": {"type": "integer"},
            "files": {"type": "array", "items": _ref("File")},
        },
    },
    "SignedLink": {
        "type": "object",
        "required": ["url", "expires_at"],
        "additionalProperties": False,
        "properties": {"url": {"type": "string"}, "expires_at": ISO_TIME},
    },
    "Reading": {
        "type": "object",
        "required": ["sensor", "quantity", "ts", "value", "unit"],
        "properties": {
            "sensor": {"type": "string"},
            "quantity": {"type": "string"},
            "ts": ISO_TIME,
            "value": {"type": "number"},
            "unit": {"type": "string"},
            "band": {"type": ["string", "number"]},
        },
    },
    "ReadingsAccepted": {
        "type": "object",
        "required": ["accepted", "rejected"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "reason": {"type": "string"},
                        "kind": {
                            "enum": ["invalid", "implausible", "conflict", "clock"],
                            "description": "why: malformed; outside the quantity's physical "
                            "range or a no-value code; another value for a stored time "
                            "(second publisher); too far ahead or implausibly old",
                        },
                    },
                },
            },
        },
    },
    "Gate": {
        "type": "object",
        "required": ["allowed", "reasons", "checked_at"],
        "properties": {
            "allowed": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "checked_at": ISO_TIME,
        },
    },
    "Alarm": {
        "type": "object",
        "required": ["id", "room", "severity", "state", "message"],
        "properties": {
            "id": {"type": "integer"},
            "rule_id": {"type": "string"},
            "room": {"type": "string"},
            "sensor": {"type": "string"},
            "quantity": {"type": "string"},
            "kind": {"type": "string"},
            "severity": {"type": "string"},
            "state": {"type": "string"},
            "message": {"type": "string"},
            "started_at": ISO_TIME,
            "acknowledged_at": NULLABLE_TIME,
            "acknowledged_by": {"type": ["string", "null"]},
            "ack_comment": {"type": ["string", "null"]},
            "resolved_at": NULLABLE_TIME,
        },
    },
    "AckRequest": {
        "type": "object",
        "required": ["comment"],
        "properties": {"comment": {"type": "string"}},
    },
}
