"""The JSON API under ``/api/v1`` (CONTRACT.md): bearer tokens, JSON errors, real status codes.

Errors are always ``{"error": {"code", "message"}}`` with the matching status (400, 401,
403, 404, 405, 409, 422, 429, 500), never a 200 and never a stack trace. Route modules
register on :data:`bp` (``portal.api`` imports them all).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from portal.db import get_db
from portal.domain.bounds import bounded_id, bounded_time
from portal.domain.errors import InvalidInput, PortalError, Unauthorized

bp = Blueprint("api", __name__, url_prefix="/api/v1")
API_PREFIX = "/api/"
log = logging.getLogger(__name__)


def json_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    """A JSON error response ``{"error": {"code", "message"}}`` with ``status``."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
}


def _portal_error(exc: PortalError):
    import sqlalchemy.exc

    try:
        get_db().rollback()
    except sqlalchemy.exc.DBAPIError:  # the database is gone; the error says so already
        log.warning("rollback failed on %s %s", request.method, request.path)
    if not is_api_request():
        from portal.views.common import render_error

        return render_error(exc.status, exc.human)
    headers = {"WWW-Authenticate": 'Bearer realm="cryofac"'} if exc.status == 401 else {}
    if getattr(exc, "retry_after_s", None):
        headers["Retry-After"] = str(exc.retry_after_s)
    response = json_error(exc.status, exc.code, exc.message, headers)
    extra = {key: getattr(exc, key) for key in ("rule", "reasons") if getattr(exc, key, None)}
    if extra:  # e.g. the booking rule broken, the gate's reasons
        body = response.get_json()
        body["error"].update(extra)
        if getattr(exc, "allowed", None) is False:  # the gate's own shape too (CONTRACT)
            body.update(allowed=False, reasons=exc.reasons)
        response.set_data(json.dumps(body))
    return response


def _http_error(exc: HTTPException):
    if not is_api_request():
        return exc
    status = exc.code or 500
    return json_error(status, _HTTP_CODES.get(status, "error"), exc.description or exc.name)


def _database_unavailable(exc: Exception) -> bool:
    """True for a database that refuses, drops or times out the connection (not a bug)."""
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError) or (
        isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated
    )


def _unexpected_error(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if _database_unavailable(exc):
        log.error("database unavailable on %s %s: %s", request.method, request.path, exc.orig)
        message = "the database is not answering; try again in a minute"
        watch = g.get("cryofac_watch")
        if watch is not None:  # a gate decision (session start): refused, with the reason
            from portal.domain.errors import GateUnavailable

            if watch.fired.is_set():
                detail = f"no answer within {watch.seconds:g} s"
            else:
                detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
            return _portal_error(
                GateUnavailable([f"database unavailable ({exc.__class__.__name__}: {detail})"])
            )
        if not is_api_request():
            from portal.views.common import render_error

            return render_error(503, message)
        return json_error(503, "unavailable", message, {"Retry-After": "30"})
    log.exception("unhandled error on %s %s", request.method, request.path)
    if not is_api_request():
        from portal.views.common import render_error

        return render_error(500, "internal error; the facility staff have been notified")
    return json_error(500, "internal_error", "internal error")


@bp.record_once
def _register_handlers(state) -> None:
    state.app.register_error_handler(PortalError, _portal_error)
    state.app.register_error_handler(HTTPException, _http_error)
    state.app.register_error_handler(Exception, _unexpected_error)


def token_required(roles: Iterable[str] | None = None) -> Callable:
    """Require ``Authorization: Bearer TOKEN``; sets ``g.user``; ``roles`` restricts (403)."""
    allowed = frozenset(roles) if roles else None

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any):
            from portal.domain.accounts import user_for_token
            from portal.domain.errors import Forbidden

            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("missing 'Authorization: Bearer TOKEN' header")
            g.user = user_for_token(get_db(), token.strip())
            if allowed is not None and g.user.role not in allowed:
                raise Forbidden("your role may not use this endpoint")
            return view(*args, **kwargs)

        return wrapper

    return decorator


def json_body() -> dict[str, Any]:
    """The request's JSON object, or :class:`InvalidInput`."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def body_field(data: dict[str, Any], name: str, kind: type, must_be: str) -> Any:
    """``data[name]`` when it is a ``kind``, else :class:`InvalidInput` saying
    "``name`` must be ``must_be``"."""
    value = data.get(name)
    if not isinstance(value, kind):
        raise InvalidInput(f"{name} must be {must_be}")
    return value


def parse_time(value: Any, name: str) -> datetime:
    """An ISO 8601 time that carries an offset (naive times are refused), in UTC,
    within :data:`portal.domain.bounds.LIMITS` (1970 to 9999-12-01)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO 8601 string with an offset")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}: {value[:40]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name}: {value[:40]!r} has no UTC offset")
    return bounded_time(parsed, name)


def parse_int(value: Any, name: str) -> int:
    """A database id (1 to 2^31 − 1) or :class:`InvalidInput`."""
    return bounded_id(value, name)


def config_value(key: str) -> Any:
    return current_app.config[key]
