"""Server-rendered pages, one small blueprint per area; the browser logs in with a cookie."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from flask import Flask, g, redirect, render_template, request, session, url_for

from portal.db import get_db
from portal.models import User


def render_error(status: int, message: str):
    return render_template("error.html", status=status, message=message), status


def password_fingerprint(user: User) -> str:
    """A keyed digest of the password hash, kept in the session cookie.

    Changing the password invalidates every cookie issued before; the cookie (signed,
    not encrypted) reveals nothing of the hash itself.
    """
    from flask import current_app

    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, user.password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def load_user() -> None:
    """Set ``g.user`` from the session cookie (None when logged out).

    Not for the JSON API: its views authenticate with a bearer token (``token_required``
    sets ``g.user``) and ignore the cookie, so reading the cookie's user there would
    only cost a query.
    """
    g.user = None
    if request.path.startswith("/api/"):
        return
    user_id = session.get("user_id")
    if user_id is not None:
        user = get_db().get(User, user_id)
        fingerprint = session.get("pw", "")
        if (
            user is not None
            and user.active
            and hmac.compare_digest(str(fingerprint), password_fingerprint(user))
        ):
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
    from portal.views import admin, auth, calendar, projects, staff
    from portal.views.calendar import load_facility_tz

    # read once at start-up, not by the first burst of concurrent requests
    app.extensions["cryofac.tz"] = load_facility_tz(app.config.get("FACILITY_CONFIG_DIR"))
    app.before_request(load_user)
    for module in (auth, calendar, projects, staff, admin):
        app.register_blueprint(module.bp)

    @app.context_processor
    def _inject() -> dict:
        from portal.domain import permissions

        return {"permissions": permissions, "current_user": g.get("user")}

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response
