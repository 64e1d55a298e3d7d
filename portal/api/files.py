"""``GET /api/v1/sessions/ID/files`` and ``GET /api/v1/sessions/ID/files/NAME``.

Listing and streaming (HTTP Range) of a session's outputs, environmental provenance
and checksum manifest; ``POST …/files/NAME/link`` issues an expiring signed URL that
``curl``/``wget`` can fetch without a token. Anyone outside the session's project gets
404 for every one of these URLs (staff and technicians see all sessions).

Kept on its own blueprint (same ``/api/v1`` prefix, same JSON errors) so it can be
added to the application whatever order the API modules are imported in.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from portal import downloads_service as service
from portal.api.common import token_required
from portal.db import get_db
from portal.domain.errors import NotFound
from portal.domain.permissions import visible_session

bp = Blueprint("api_files", __name__, url_prefix="/api/v1")


@bp.get("/sessions/<int:session_id>/files")
@token_required()
def list_files(session_id: int):
    session = visible_session(get_db(), g.user, session_id)
    files = [item.as_dict(session.id) for item in service.downloadables(session)]
    return jsonify({"session_id": session.id, "files": files})


@bp.route("/sessions/<int:session_id>/files/<path:name>", methods=["GET", "HEAD"])
@token_required()
def get_file(session_id: int, name: str):
    session = visible_session(get_db(), g.user, session_id)
    item = service.find_downloadable(session, name)
    if item is None:
        raise NotFound(f"session {session_id} has no file {name!r}")
    return service.stream(session, item, request, g.user, "api")


@bp.post("/sessions/<int:session_id>/files/<path:name>/link")
@token_required()
def make_link(session_id: int, name: str):
    session = visible_session(get_db(), g.user, session_id)
    if service.find_downloadable(session, name) is None:
        raise NotFound(f"session {session_id} has no file {name!r}")
    url, expires = service.signed_link(g.user.id, session.id, name)
    service.audit_link(session, name, expires, g.user)
    response = jsonify({"url": url, "expires_at": expires.isoformat()})
    response.status_code = 201
    return response
