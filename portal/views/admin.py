"""The audit log, readable by administrators only."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from portal.db import get_db
from portal.domain import permissions
from portal.models import AuditEntry

bp = Blueprint("admin", __name__, url_prefix="/admin")
PAGE = 100


@bp.before_request
def _admins_only():
    if g.get("user") is None:
        return redirect(url_for("auth.login", next=request.full_path))
    if not permissions.is_admin(g.user):
        abort(403)
    return None


@bp.get("/audit")
def audit_log():
    try:
        page = min(max(int(request.args.get("page", 1)), 1), 1_000_000)
    except ValueError:
        page = 1
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc())
    entity = request.args.get("entity", "").strip()
    if entity:
        query = query.where(AuditEntry.entity == entity)
    entries = get_db().scalars(query.offset((page - 1) * PAGE).limit(PAGE)).all()
    return render_template("audit.html", entries=entries, page=page, entity=entity, size=PAGE)
