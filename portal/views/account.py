"""The signed-in user's account: change the password, revoke tokens and feed links."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from portal.db import get_db
from portal.domain import accounts
from portal.domain.errors import PortalError
from portal.domain.login_throttle import policy_from_config
from portal.facility import password_hasher
from portal.models import ApiToken
from portal.views.common import login_required, start_session

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.get("")
@login_required
def index():
    tokens = get_db().scalar(
        sa.select(sa.func.count(ApiToken.id)).where(ApiToken.user_id == g.user.id)
    )
    return render_template("account.html", tokens=tokens, error=None)


@bp.post("/password")
@login_required
def change_password():
    form = request.form
    db = get_db()
    user = g.user
    error, status = None, 200
    if form.get("new_password", "") != form.get("confirm_password", ""):
        error, status = "the new password and its confirmation differ", 400
    else:
        try:
            accounts.change_password(
                db,
                password_hasher(),
                user,
                form.get("current_password", ""),
                form.get("new_password", ""),
                request.remote_addr or "unknown",
                policy_from_config(current_app.config),
            )
            db.commit()
        except PortalError as exc:
            db.commit()  # keeps the counted attempt; nothing else was changed
            error, status = exc.message, exc.status
    if error:
        return render_template("account.html", tokens=None, error=error), status
    start_session(user)  # this browser stays logged in; every other session ends
    flash("Password changed; every other session and every API token was revoked.")
    return redirect(url_for("account.index"))


@bp.post("/revoke")
@login_required
def revoke_everything():
    """Log out everywhere and delete every API token."""
    db = get_db()
    tokens = accounts.revoke_all(db, g.user)
    db.commit()
    start_session(g.user)
    flash(f"Every other session ended; {tokens} API token(s) revoked.")
    return redirect(url_for("account.index"))


@bp.post("/feeds/reset")
@login_required
def reset_feeds():
    db = get_db()
    accounts.reset_feed_links(db, g.user)
    db.commit()
    flash("Your old calendar-feed addresses no longer work; subscribe to the new ones.")
    return redirect(url_for("ical.feeds"))
