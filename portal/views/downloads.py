"""Downloads in the browser, and expiring signed links for command-line clients.

* ``GET /sessions/ID/files/NAME`` — the file, streamed with HTTP Range, for a logged-in
  project member (404 for anyone else).
* ``POST /sessions/ID/files/NAME/link`` — make an expiring link and show it with ready
  ``curl``/``wget`` commands.
* ``GET /dl/TOKEN`` — the file for whoever holds the link, no cookie or token needed
  (``curl -C - -O``, ``wget -c`` resume with Range). Access is re-checked at every use:
  a link stops working when it expires or when its owner leaves the project.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, g, render_template, request

from portal import downloads_service as service
from portal.db import get_db
from portal.domain.errors import NotFound
from portal.domain.permissions import visible_session
from portal.downloads import DownloadLinkError, read_link_token
from portal.models import User
from portal.views.common import login_required

bp = Blueprint("downloads", __name__)


def _find(session_id: int, name: str):
    session = visible_session(get_db(), g.user, session_id)
    item = service.find_downloadable(session, name)
    if item is None:
        raise NotFound(f"session {session_id} has no file {name!r}")
    return session, item


@bp.route("/sessions/<int:session_id>/files/<path:name>", methods=["GET", "HEAD"])
@login_required
def download(session_id: int, name: str):
    session, item = _find(session_id, name)
    return service.stream(session, item, request, g.user, "browser")


@bp.post("/sessions/<int:session_id>/files/<path:name>/link")
@login_required
def make_link(session_id: int, name: str):
    session, item = _find(session_id, name)
    url, expires = service.signed_link(g.user.id, session.id, item.name)
    service.audit_link(session, item.name, expires, g.user)
    return render_template(
        "runs/link.html",
        session=session,
        item=item,
        url=url,
        expires=expires,
        filename=f"session{session.id}_{item.name}",
    )


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


@bp.route("/dl/<token>", methods=["GET", "HEAD"])
def signed_download(token: str):
    try:
        grant = read_link_token(current_app.config["SECRET_KEY"], token)
    except DownloadLinkError as exc:
        status = 410 if "expired" in str(exc) else 404
        return _plain(status, f"error: {exc}")
    db = get_db()
    user = db.get(User, grant.user_id)
    if user is None or not user.active:
        abort(404)
    try:
        session = visible_session(db, user, grant.session_id)
    except NotFound:
        return _plain(404, "error: not found")
    item = service.find_downloadable(session, grant.name)
    if item is None:
        return _plain(404, "error: not found")
    return service.stream(session, item, request, user, "link")
