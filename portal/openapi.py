"""The OpenAPI 3.1 document of ``/api/v1``, served at ``/api/v1/openapi.json``.

Written as data next to the code it describes; tests send real requests through the
application and validate every JSON response against the schema listed here for its
path, method and status (:func:`validate_response`), so the document cannot drift from
what the API really returns. Schemas follow JSON Schema 2020-12 (OpenAPI 3.1).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, jsonify

bp = Blueprint("openapi", __name__)

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


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

ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "public file name from the file list, e.g. map.mrc",
}
RANGE_PARAM = {
    "name": "Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "example": "bytes=1048576-"},
    "description": "one byte range (RFC 9110); resumes a download",
}
COMMON_ERRORS = {"401": _error("missing or invalid token")}


def _paths() -> dict[str, Any]:
    auth = {"security": [{"bearer": []}]}
    return {
        "/tokens": {
            "post": {
                "summary": "Exchange a username and password for a bearer token",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("TokenRequest")}},
                },
                "responses": {
                    "201": _json(_ref("Token"), "token issued"),
                    "400": _error("malformed request"),
                    "401": _error("wrong username or password"),
                    "429": _error(
                        "too many failed attempts for this account or address: wait the"
                        " seconds in the Retry-After header (delays double after each"
                        " failure, capped; never a lock-out)"
                    ),
                },
            },
            "delete": {
                "security": [{"bearer": []}],
                "summary": "Revoke the bearer token of this request",
                "responses": {"204": {"description": "revoked"}, **COMMON_ERRORS},
            },
        },
        "/instruments": {
            "get": {
                **auth,
                "summary": "The facility's bookable instruments",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Instrument")}),
                    **COMMON_ERRORS,
                },
            }
        },
        "/instruments/{id}/gate": {
            "get": {
                **auth,
                "summary": "Whether the environment allows acquisition now, and why not",
                "parameters": [{**ID_PARAM, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json(_ref("Gate"), "decided (allowed or refused, with reasons)"),
                    "404": _error("no such instrument"),
                    "503": _json(
                        _ref("Gate"),
                        "could not decide (database unreachable or not answering within a "
                        "few seconds, configuration broken): allowed is false, reasons say why",
                    ),
                    **COMMON_ERRORS,
                },
            }
        },
        "/bookings": {
            "get": {
                **auth,
                "summary": "Bookings visible to the caller",
                "parameters": [
                    {"name": "instrument_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "start", "in": "query", "schema": ISO_TIME},
                    {"name": "end", "in": "query", "schema": ISO_TIME},
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Booking")}),
                    "400": _error("malformed query"),
                    **COMMON_ERRORS,
                },
            },
            "post": {
                **auth,
                "summary": "Book an instrument for a project",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("BookingRequest")}},
                },
                "responses": {
                    "201": _json(_ref("Booking"), "booked"),
                    "400": _error("malformed request"),
                    "403": _error("not allowed to book for this project"),
                    "404": _error("no such instrument or project"),
                    "409": _error("overlaps another booking or a maintenance block"),
                    "422": _error("breaks a booking rule (the message says which)"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/bookings/{id}": {
            "get": {
                **auth,
                "parameters": [ID_PARAM],
                "responses": {
                    "200": _json(_ref("Booking")),
                    "404": _error("not found"),
                    **COMMON_ERRORS,
                },
            },
            "delete": {
                **auth,
                "parameters": [ID_PARAM],
                "responses": {
                    "204": {"description": "cancelled"},
                    "403": _error("not allowed to cancel"),
                    "404": _error("not found"),
                    "409": _error("past the cancellation deadline"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/bookings/{id}/decision": {
            "post": {
                **auth,
                "summary": "Staff approve or reject a pending booking",
                "parameters": [ID_PARAM],
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Decision")}}},
                "responses": {
                    "200": _json(_ref("Booking"), "decided"),
                    "400": _error("malformed request"),
                    "403": _error("staff only"),
                    "404": _error("not found"),
                    "409": _error("the booking is not pending"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/waitlist": {
            "post": {
                **auth,
                "summary": "Ask to be offered a taken slot if it is freed",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("WaitlistRequest")}},
                },
                "responses": {
                    "201": _json(_ref("WaitlistEntry"), "on the waiting list"),
                    "400": _error("malformed request"),
                    "403": _error("not a member of the project"),
                    "404": _error("no such instrument or project"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/sessions/{id}/transition": {
            "post": {
                **auth,
                "summary": "Operators move a session along its lifecycle (gate checked)",
                "parameters": [ID_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("TransitionRequest")}},
                },
                "responses": {
                    "200": _json(_ref("SessionAfterTransition"), "moved"),
                    "400": _error("malformed request"),
                    "403": _error("operators only"),
                    "404": _error("not found"),
                    "409": _error("not allowed from this state, or the environment gate is closed"),
                    "503": _error(
                        "the environment gate cannot decide (database silent or unreachable, "
                        "configuration broken): refused; the body also carries "
                        '"allowed": false and "reasons"'
                    ),
                    **COMMON_ERRORS,
                },
            }
        },
        "/sessions/{id}": {
            "get": {
                **auth,
                "summary": "State, times, processing progress and statistics of a session",
                "parameters": [ID_PARAM],
                "responses": {
                    "200": _json(_ref("Session")),
                    "404": _error("not found (also for anyone outside the project)"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/sessions/{id}/files": {
            "get": {
                **auth,
                "summary": "Downloadable outputs, environmental provenance and manifest",
                "parameters": [ID_PARAM],
                "responses": {
                    "200": _json(_ref("FileList")),
                    "404": _error("not found (also for anyone outside the project)"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/sessions/{id}/files/{name}": {
            "get": {
                **auth,
                "summary": "The file, streamed; supports HTTP Range (206) and If-None-Match",
                "parameters": [ID_PARAM, NAME_PARAM, RANGE_PARAM],
                "responses": {
                    "200": {
                        "description": "the whole file",
                        "content": {"application/octet-stream": {}},
                    },
                    "206": {
                        "description": "the requested range",
                        "content": {"application/octet-stream": {}},
                    },
                    "304": {"description": "not modified"},
                    "404": _error("not found (also for anyone outside the project)"),
                    "416": {"description": "range not satisfiable"},
                    **COMMON_ERRORS,
                },
            }
        },
        "/sessions/{id}/files/{name}/link": {
            "post": {
                **auth,
                "summary": "An expiring signed URL for curl/wget (no token needed to use it)",
                "parameters": [ID_PARAM, NAME_PARAM],
                "responses": {
                    "201": _json(_ref("SignedLink"), "link issued"),
                    "404": _error("not found (also for anyone outside the project)"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/env/readings": {
            "post": {
                **auth,
                "summary": "Ingest environment readings (idempotent per sensor, quantity, ts)",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"type": "array", "items": _ref("Reading")}}},
                },
                "responses": {
                    "202": _json(_ref("ReadingsAccepted"), "accepted"),
                    "400": _error(
                        "not a JSON array, not valid JSON or UTF-8, or nested deeper than 8 "
                        "(checked before parsing)"
                    ),
                    "413": _error(
                        "body larger than the limit (32 MiB by default; refused before it is "
                        "read whole) or more than 50,000 readings"
                    ),
                    "503": _error("the facility configuration cannot be read"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/alarms": {
            "get": {
                **auth,
                "summary": "Alarms, newest first, one page at a time",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {
                            "enum": [
                                "pending",
                                "firing",
                                "acknowledged",
                                "resolved",
                                "open",
                                "unacknowledged",
                            ]
                        },
                        "description": "open: pending, firing or acknowledged; "
                        "unacknowledged: fired and not acknowledged (firing or resolved since)",
                    },
                    {"name": "room", "in": "query", "schema": {"type": "string"}},
                    {"name": "sensor", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "severity",
                        "in": "query",
                        "schema": {"enum": ["warning", "critical"]},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "schema": ISO_TIME,
                        "description": "started at or after (ISO 8601 with offset)",
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "schema": ISO_TIME,
                        "description": "started at or before (ISO 8601 with offset)",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                ],
                "responses": {
                    "200": {
                        **_json({"type": "array", "items": _ref("Alarm")}),
                        "headers": {
                            "X-Total-Count": {
                                "description": "alarms matching the filters, all pages",
                                "schema": {"type": "integer"},
                            },
                            "Link": {
                                "description": 'the next page: <URL>; rel="next" (absent on '
                                "the last page)",
                                "schema": {"type": "string"},
                            },
                        },
                    },
                    "422": _error("unknown state or severity, or a bad limit/offset"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/alarms/{id}/ack": {
            "post": {
                **auth,
                "parameters": [ID_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("AckRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Alarm"), "acknowledged"),
                    "404": _error("no such alarm"),
                    "409": _error(
                        "alarm cannot be acknowledged in its state (only a firing alarm, or "
                        "one that fired and resolved unacknowledged)"
                    ),
                    **COMMON_ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object", "required": ["openapi", "paths"]})},
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy each call)."""
    from cryofac import __version__

    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "cryofac facility API",
                "version": __version__,
                "description": "Bookings, sessions, downloads and room environment of a "
                'cryo-EM facility. Errors are {"error": {"code", "message"}}.',
            },
            "servers": [{"url": "/api/v1"}],
            "paths": _paths(),
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )


def flask_rule_to_template(rule: str) -> str:
    """``/api/v1/sessions/<int:session_id>/files/<path:name>`` -> ``/sessions/{id}/files/{name}``."""
    import re

    path = rule.removeprefix("/api/v1")

    def name(match: re.Match) -> str:
        variable = match.group(1).split(":")[-1]
        return "{name}" if variable == "name" else "{id}"

    return re.sub(r"<([^>]+)>", name, path)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_schema(doc: dict, method: str, template: str, status: int) -> dict | None:
    """The JSON schema documented for (``method``, ``template`` path, ``status``), or None."""
    operation = doc["paths"].get(template, {}).get(method.lower())
    if operation is None:
        raise KeyError(f"{method.upper()} {template} is not documented")
    response = operation["responses"].get(str(status))
    if response is None:
        raise KeyError(f"{method.upper()} {template} does not document status {status}")
    if _JSON not in response.get("content", {}):
        return None
    return {
        "$ref": "urn:cryofac-openapi#/"
        + _pointer("paths", template, method.lower(), "responses", str(status))
        + "/content/application~1json/schema"
    }


def validate_response(doc: dict, method: str, template: str, status: int, body: Any) -> None:
    """Raise ``jsonschema.ValidationError`` (or KeyError) unless ``body`` matches the document."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    schema = response_schema(doc, method, template, status)
    if schema is None:
        return
    registry = Registry().with_resource(
        "urn:cryofac-openapi", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    Draft202012Validator(schema, registry=registry).validate(body)


@bp.get("/api/v1/openapi.json")
def openapi_json():
    return jsonify(document())
