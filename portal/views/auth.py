"""Log in and out with a session cookie (CSRF-protected forms, throttled, audited)."""

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
from portal.domain.login_throttle import policy_from_config
from portal.facility import password_hasher
from portal.views.common import start_session

bp = Blueprint("auth", __name__)

#: A browser's proof that this account logged in from it before (signed, 180 days).
DEVICE_COOKIE = "cryofac_device"
DEVICE_SALT = "cryofac-device/1"
DEVICE_MAX_AGE_S = 180 * 24 * 3600


def _device_for(username: str) -> str | None:
    """The device id in this browser's cookie when it was issued for ``username``."""
    from itsdangerous import BadData, URLSafeTimedSerializer

    raw = request.cookies.get(DEVICE_COOKIE, "")
    if not raw or len(raw) > 500:
        return None
    signer = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=DEVICE_SALT)
    try:
        name, device = signer.loads(raw, max_age=DEVICE_MAX_AGE_S)
    except (BadData, ValueError, TypeError):
        return None
    return str(device)[:64] if name == username else None


def _remember_device(response, username: str, device: str | None) -> None:
    import secrets

    from itsdangerous import URLSafeTimedSerializer

    signer = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=DEVICE_SALT)
    response.set_cookie(
        DEVICE_COOKIE,
        signer.dumps([username, device or secrets.token_urlsafe(16)]),
        max_age=DEVICE_MAX_AGE_S,
        httponly=True,
        samesite="Lax",
        secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
        path=url_for("auth.login"),
    )


def _safe_next(target: str | None) -> str:
    if target and any(ord(c) < 32 or ord(c) == 127 for c in target):
        return url_for("calendar.index")  # CR/LF (header injection) or other controls
    parsed = urlparse(target or "")
    local = target and not parsed.netloc and not parsed.scheme and target.startswith("/")
    unsafe = target.startswith("//") or any(c in target for c in "\\\r\n\0") if local else True
    if not unsafe:
        return target
    return url_for("calendar.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    status = 200
    headers = {}
    if request.method == "POST":
        db = get_db()
        username = request.form.get("username", "")
        device = _device_for(username)
        try:
            user = accounts.authenticate(
                db,
                password_hasher(),
                username,
                request.form.get("password", ""),
                request.remote_addr or "unknown",
                policy_from_config(current_app.config),
                device=device,
            )
        except PortalError as exc:
            db.commit()
            error, status = exc.message, exc.status
            if getattr(exc, "retry_after_s", None):
                headers["Retry-After"] = str(exc.retry_after_s)
        else:
            db.commit()
            start_session(user)
            flash(f"Welcome, {user.full_name}.")
            response = redirect(_safe_next(request.args.get("next")))
            _remember_device(response, user.username, device)
            return response
    return render_template("login.html", error=error), status, headers


@bp.post("/logout")
def logout():
    """End this and every other browser session of the account (the epoch moves on)."""
    user = g.get("user")
    if user is not None:
        db = get_db()
        accounts.log_out(db, user)
        db.commit()
    session.clear()
    g.user = None
    return redirect(url_for("auth.login"))
