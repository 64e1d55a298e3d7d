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
from portal.api.spec import RANGE_PARAM, binary, empty, error, ok, operation
from portal.db import get_db
from portal.domain.errors import NotFound
from portal.domain.permissions import visible_session

bp = Blueprint("api_files", __name__, url_prefix="/api/v1")


@bp.get("/sessions/<int:session_id>/files")
@operation(
    {200: ok("FileList"), 404: error("not found (also for anyone outside the project)")},
    summary="Downloadable outputs, environmental provenance and manifest",
)
@token_required()
def list_files(session_id: int):
    session = visible_session(get_db(), g.user, session_id)
    files = [item.as_dict(session.id) for item in service.downloadables(session)]
    return jsonify({"session_id": session.id, "files": files})


@bp.route("/sessions/<int:session_id>/files/<path:name>", methods=["GET", "HEAD"])
@operation(
    {
        200: binary("the whole file"),
        206: binary("the requested range"),
        304: empty("not modified"),
        404: error("not found (also for anyone outside the project)"),
        416: empty("range not satisfiable"),
    },
    summary="The file, streamed; supports HTTP Range (206) and If-None-Match",
    parameters=[RANGE_PARAM],
)
@token_required()
def get_file(session_id: int, name: str):
    session = visible_session(get_db(), g.user, session_id)
    item = service.find_downloadable(session, name)
    if item is None:
        raise NotFound(f"session {session_id} has no file {name!r}")
    return service.stream(session, item, request, g.user, "api")


@bp.post("/sessions/<int:session_id>/files/<path:name>/link")
@operation(
    {
        201: ok("SignedLink", "link issued"),
        404: error("not found (also for anyone outside the project)"),
    },
    summary="An expiring signed URL for curl/wget (no token needed to use it)",
)
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
