"""Server-rendered pages, one small blueprint per area; the browser logs in with a cookie."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, g, redirect, render_template, request, session, url_for

from portal.db import get_db
from portal.models import User


def render_error(status: int, message: str):
    return render_template("error.html", status=status, message=message), status


def start_session(user: User) -> None:
    """Log ``user`` in on this browser: a fresh cookie carrying their ``auth_epoch``.

    The cookie is signed, not stored; it stays valid only while the account's epoch is
    unchanged, so log-out, a password change or reset and deactivation end it at once.
    """
    session.clear()
    session["user_id"] = user.id
    session["epoch"] = user.auth_epoch


def load_user() -> None:
    """Set ``g.user`` from the session cookie (None when logged out or revoked).

    Not for the JSON API: its views authenticate with a bearer token (``token_required``
    sets ``g.user``) and ignore the cookie, so reading the cookie's user there would
    only cost a query.
    """
    g.user = None
    if request.path.startswith("/api/"):
        return
    user_id = session.get("user_id")
    if user_id is not None:
        user = get_db().get(User, user_id) if isinstance(user_id, int) else None
        if user is not None and user.active and session.get("epoch") == user.auth_epoch:
            g.user = user
        else:
            session.clear()


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        if g.get("user") is None:
            return redirect(url_for("auth.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


def register_views(app: Flask) -> None:
    from portal.domain.timezones import local_text, use_display_zone
    from portal.views import account, admin, auth, calendar, projects, staff
    from portal.views.calendar import load_facility_tz

    # read once at start-up, not by the first burst of concurrent requests
    tz = app.extensions["cryofac.tz"] = load_facility_tz(
        app.config.get("FACILITY_CONFIG_DIR"), app.config.get("FACILITY_TIMEZONE")
    )
    app.before_request(lambda: use_display_zone(tz))  # messages name the facility zone
    app.before_request(load_user)
    app.add_template_filter(lambda moment: local_text(moment, tz), "local")
    app.add_template_filter(lambda moment: local_text(moment, tz, seconds=True), "local_s")
    for module in (auth, account, calendar, projects, staff, admin):
        app.register_blueprint(module.bp)

    @app.context_processor
    def _inject() -> dict:
        from portal.domain import permissions

        return {"permissions": permissions, "current_user": g.get("user"), "facility_tz": tz}

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response
