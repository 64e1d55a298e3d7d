"""What every server-rendered page shares: the cookie session, ``login_required`` and the
error page. The blueprints import from here; ``portal.views`` only registers them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy.orm import Session

from portal.db import get_db
from portal.domain.errors import GateUnavailable, PortalError
from portal.models import User

T = TypeVar("T")


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


def role_gate(allowed: Callable[[User], bool]) -> Callable[[], Any]:
    """A ``before_request`` hook for a blueprint of one role: log in first, then 403
    unless ``allowed(user)``."""

    def gate():
        if g.get("user") is None:
            return redirect(url_for("auth.login", next=request.full_path))
        if not allowed(g.user):
            abort(403)
        return None

    return gate


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        if g.get("user") is None:
            return redirect(url_for("auth.login", next=request.full_path))
        return view(*args, **kwargs)

    return wrapper


def visible_or_404(find: Callable[[Session, User, int], T], object_id: int) -> T:
    """``find(db, user, object_id)`` (a ``portal.domain.permissions.visible_*``), or the
    plain 404 page when it does not exist or the user may not see it."""
    try:
        return find(get_db(), g.user, object_id)
    except PortalError:
        abort(404)


def act(action: Callable[[], str | None], to: str, **values: Any):
    """A form's POST: run ``action`` and commit, flashing the message it returns; a refusal
    (:class:`PortalError`) is rolled back and flashed in plain words. A gate that cannot
    answer is a 503 page with its reasons (``portal.api.common``), not a flash. Redirects
    to ``url_for(to, **values)`` either way."""
    db = get_db()
    try:
        message = action()
    except GateUnavailable:
        raise
    except PortalError as exc:
        db.rollback()
        flash(exc.human, "error")
    else:
        db.commit()
        if message:
            flash(message)
    return redirect(url_for(to, **values))
