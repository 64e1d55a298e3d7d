"""Administration: the audit log and the accounts (reset a password, (de)activate)."""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from flask import Blueprint, abort, g, render_template, request

from portal.db import get_db
from portal.domain import accounts, permissions
from portal.facility import password_hasher
from portal.models import AuditEntry, User
from portal.views.common import act, role_gate

bp = Blueprint("admin", __name__, url_prefix="/admin")
PAGE = 100


bp.before_request(role_gate(permissions.is_admin))


@bp.get("/audit")
def audit_log():
    try:
        page = min(max(int(request.args.get("page", 1)), 1), 1_000_000)
    except ValueError:
        page = 1
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc())
    entity = request.args.get("entity", "").strip()[:80].replace("\0", "")
    if entity:
        query = query.where(AuditEntry.entity == entity)
    entries = get_db().scalars(query.offset((page - 1) * PAGE).limit(PAGE)).all()
    from portal.views.calendar import facility_tz

    return render_template(
        "audit.html", entries=entries, page=page, entity=entity, size=PAGE, tz=facility_tz()
    )


@bp.get("/users")
def users():
    rows = get_db().scalars(sa.select(User).order_by(User.username)).all()
    return render_template("admin_users.html", users=rows)


def _user(user_id: int) -> User:
    user = get_db().get(User, user_id) if 0 < user_id < 2**31 else None  # int4 ids
    if user is None:
        abort(404)
    return user


@bp.post("/users/<int:user_id>/reset-password")
def reset_password(user_id: int):
    """Give the account a random password (shown once) and revoke its sessions and tokens."""
    db = get_db()
    user = _user(user_id)
    password = secrets.token_urlsafe(12)
    accounts.set_password(db, password_hasher(), user, password, g.user)
    db.commit()
    if user.id == g.user.id:
        from portal.views.common import start_session

        start_session(user)
    # shown in this response only (a flash would carry it in the signed, unencrypted cookie)
    rows = db.scalars(sa.select(User).order_by(User.username)).all()
    response = render_template("admin_users.html", users=rows, new_password=(user, password))
    return response, 200, {"Cache-Control": "no-store"}


@bp.post("/users/<int:user_id>/active")
def set_active(user_id: int):
    db = get_db()
    user = _user(user_id)
    active = request.form.get("active") == "1"

    def set_user_active() -> str:
        accounts.set_active(db, g.user, user, active, request.form.get("reason", "")[:500])
        return f"{user.username} {'reactivated' if active else 'deactivated'}."

    return act(set_user_active, "admin.users")
