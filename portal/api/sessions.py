"""Sessions: ``GET /api/v1/sessions/ID`` and operator transitions."""

from __future__ import annotations

import re

from flask import g, jsonify

from portal.api.common import body_field, bp, json_body, token_required
from portal.api.spec import error, ok, operation
from portal.db import get_db
from portal.domain import permissions
from portal.domain import sessions as lifecycle
from portal.facility import session_gate


def for_viewer(body: dict, session) -> dict:
    """``body`` as ``g.user`` may read it: server paths only for operators.

    Researchers get no ``raw_dir``/``run_dir`` (null) and no file paths in a
    processing error (the folder is named "the run folder").
    """
    if permissions.is_operator(g.user):
        return body
    body = dict(body, raw_dir=None, run_dir=None)
    processing = body.get("processing") or {}
    if "error" in processing:
        error = str(processing["error"])
        for path in sorted(filter(None, (session.run_dir, session.raw_dir)), key=len, reverse=True):
            root = path.rstrip("/")
            error = error.replace(root + "/", "").replace(root, "the run folder")
        if re.search(r"(^|[\s'\"(=])(/|[A-Za-z]:\\)", error):  # still an absolute path
            error = "the run folder cannot be read; the facility staff can see why"
        body["processing"] = dict(processing, error=error)
    return body


@bp.get("/sessions/<int:session_id>")
@operation(
    {200: ok("Session"), 404: error("not found (also for anyone outside the project)")},
    summary="State, times, processing progress and statistics of a session",
)
@token_required()
def get_session(session_id: int):
    session = permissions.visible_session(get_db(), g.user, session_id)
    return jsonify(for_viewer(lifecycle.as_dict(session), session))


@bp.post("/sessions/<int:session_id>/transition")
@operation(
    {
        200: ok("SessionAfterTransition", "moved"),
        400: error("malformed request"),
        403: error("operators only"),
        404: error("not found"),
        409: error("not allowed from this state, or the environment gate is closed"),
        503: error(
            "the environment gate cannot decide (database silent or unreachable, "
            'configuration broken): refused; the body also carries "allowed": false and "reasons"'
        ),
    },
    summary="Operators move a session along its lifecycle (gate checked)",
    body="TransitionRequest",
)
@token_required(roles=permissions.OPERATOR_ROLES)
def transition_session(session_id: int):
    data = json_body()
    to_state = body_field(data, "state", str, "a string")
    db = get_db()
    session = permissions.visible_session(db, g.user, session_id)
    result = lifecycle.transition(
        db,
        g.user,
        session,
        to_state,
        reason=str(data.get("reason", "")),
        override_gate=bool(data.get("override_gate", False)),
        gate=session_gate(),
    )
    db.commit()
    body = lifecycle.as_dict(session)
    if result is not None:
        body["gate"] = {
            "allowed": result.allowed,
            "reasons": result.reasons,
            "checked_at": result.checked_at.isoformat() if result.checked_at else None,
        }
    return jsonify(body)
