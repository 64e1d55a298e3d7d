"""Checks every request passes before any view runs (see :mod:`portal.domain.bounds`).

* ``MAX_CONTENT_LENGTH`` (bytes; default 16 MiB): a larger body is refused with 413
  before it is read (werkzeug checks Content-Length; ``cryofac portal serve`` gives
  waitress the same limit, so it does not buffer it either).
* ``<int:...>`` in a URL only matches ids from 0 to 2^31 − 1 (a larger one is a 404).
* A NUL character in the path, the query, a form or a JSON body is a 400; so is a JSON
  body nested deeper than ``MAX_JSON_DEPTH`` (default 64). A view marked
  :func:`screens_own_json` (the sensor-readings intake, which refuses one bad reading and
  keeps the rest) gets its JSON body unchecked here and applies its own limits.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.routing import IntegerConverter

from portal.domain.bounds import LIMITS, EdgeLimits, check_json, has_nul
from portal.domain.errors import InvalidInput

DEFAULT_MAX_CONTENT_LENGTH = 16 * 1024 * 1024


class BoundedIntConverter(IntegerConverter):
    """``int`` URL segments that fit the database's 32-bit ids."""

    def __init__(self, map, *args, **kwargs) -> None:
        kwargs.setdefault("max", LIMITS.max_id)
        super().__init__(map, *args, **kwargs)


def screens_own_json(view):
    """Mark ``view`` as applying its own size, depth and character checks to its JSON body."""
    view.screens_own_json = True
    return view


def install_converters(app: Flask) -> None:
    """Before any blueprint is registered: bounded ``int`` URL segments."""
    app.url_map.converters["int"] = BoundedIntConverter


def install(app: Flask) -> None:
    """Body size default and the per-request checks."""
    app.config.setdefault("MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = DEFAULT_MAX_CONTENT_LENGTH
    limits = EdgeLimits(max_json_depth=int(app.config.get("MAX_JSON_DEPTH", 64)))

    @app.before_request
    def _edge_checks() -> None:
        if has_nul(request.path) or any(
            has_nul(k) or has_nul(v) for k, v in request.args.items(multi=True)
        ):
            raise InvalidInput("the URL holds a NUL character")
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        if request.is_json:
            view = app.view_functions.get(request.endpoint or "")
            if not getattr(view, "screens_own_json", False):
                check_json(request.get_data(cache=True), limits)
            return
        forms = ("application/x-www-form-urlencoded", "multipart/form-data")
        if request.mimetype in forms and any(
            has_nul(k) or has_nul(v) for k, v in request.form.items(multi=True)
        ):
            raise InvalidInput("the form holds a NUL character")
