"""``POST /api/v1/tokens``: exchange a username and password for a bearer token."""

from __future__ import annotations

from flask import current_app, g, jsonify, request

from portal.api.common import bp, json_body, token_required
from portal.api.spec import empty, error, ok, operation
from portal.db import get_db
from portal.domain import accounts
from portal.domain.errors import InvalidInput, PortalError
from portal.domain.login_throttle import policy_from_config
from portal.facility import password_hasher


@bp.post("/tokens")
@operation(
    {
        201: ok("Token", "token issued"),
        400: error("malformed request"),
        401: error("wrong username or password"),
        429: error(
            "too many failed attempts for this account or address: wait the"
            " seconds in the Retry-After header (delays double after each"
            " failure, capped; never a lock-out)"
        ),
    },
    summary="Exchange a username and password for a bearer token",
    body="TokenRequest",
    auth=False,
)
def create_token():
    data = json_body()
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidInput("username and password are required strings")
    db = get_db()
    policy = policy_from_config(current_app.config)
    try:
        user = accounts.authenticate(
            db,
            password_hasher(),
            username,
            password,
            request.remote_addr or "unknown",
            policy,
        )
    except PortalError:
        db.commit()  # keep the failed attempt for the rate limiter
        raise
    token = accounts.issue_token(db, user, float(current_app.config["TOKEN_TTL_H"]))
    db.commit()
    return jsonify({"token": token, "user": user.public(), "role": user.role}), 201


@bp.delete("/tokens")
@operation({204: empty("revoked")}, summary="Revoke the bearer token of this request")
@token_required()
def revoke_token():
    """Revoke the bearer token of this request."""
    token = request.headers["Authorization"].partition(" ")[2].strip()
    db = get_db()
    accounts.revoke_token(db, token, g.user)
    db.commit()
    return "", 204
