"""Log in and out with a session cookie (CSRF-protected forms, rate-limited)."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from portal.db import get_db
from portal.domain import accounts
from portal.domain.errors import PortalError
from portal.views import password_fingerprint

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    if target and any(ord(c) < 32 or ord(c) == 127 for c in target):
        return url_for("calendar.index")  # CR/LF (header injection) or other controls
    parsed = urlparse(target or "")
    local = target and not parsed.netloc and not parsed.scheme and target.startswith("/")
    if local and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("calendar.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    status = 200
    if request.method == "POST":
        db = get_db()
        policy = accounts.LoginPolicy(
            int(current_app.config["LOGIN_MAX_FAILURES"]),
            float(current_app.config["LOGIN_WINDOW_MIN"]),
        )
        try:
            user = accounts.authenticate(
                db,
                current_app.extensions["cryofac.hasher"],
                request.form.get("username", ""),
                request.form.get("password", ""),
                request.remote_addr or "unknown",
                policy,
            )
        except PortalError as exc:
            db.commit()
            error, status = exc.message, exc.status
        else:
            db.commit()
            session.clear()
            session["user_id"] = user.id
            session["pw"] = password_fingerprint(user)
            flash(f"Welcome, {user.full_name}.")
            return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout():
    session.clear()
    g.user = None
    return redirect(url_for("auth.login"))
