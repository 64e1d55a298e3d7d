"""The OpenAPI 3.1 document of ``/api/v1``, served at ``/api/v1/openapi.json``.

Generated, not written out: every route declares its operation beside itself
(:func:`portal.api.spec.operation`: summary, body, parameters, responses) and names its
bodies' schemas (:mod:`portal.api.schemas`); :func:`document` walks the application's
URL map and assembles them. Tests send real requests through the application and
validate every JSON response against the schema declared for its path, method and
status (:func:`validate_response`), so the document cannot drift from what the API
really returns. Schemas follow JSON Schema 2020-12 (OpenAPI 3.1).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Flask, current_app, has_app_context, jsonify

from portal.api.schemas import SCHEMAS
from portal.api.spec import JSON, PREFIX, build_paths, ok, operation, path_template

bp = Blueprint("openapi", __name__)


def document(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s API (default: the current application, or the
    API's blueprints alone outside a request), built from the routes' declarations."""
    from cryofac import __version__

    if app is None:
        app = current_app._get_current_object() if has_app_context() else _api_only_app()
    paths = build_paths(app.url_map.iter_rules(), app.view_functions)
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "cryofac facility API",
                "version": __version__,
                "description": "Bookings, sessions, downloads and room environment of a "
                'cryo-EM facility. Errors are {"error": {"code", "message"}}.',
            },
            "servers": [{"url": PREFIX}],
            "paths": paths,
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )


def _api_only_app() -> Flask:
    """A bare application with only the API's routes (for the document outside a request)."""
    from portal.api import bp as api_bp
    from portal.api import files as api_files

    app = Flask("cryofac-openapi")
    for blueprint in (api_bp, api_files.bp, bp):
        app.register_blueprint(blueprint)
    return app


def flask_rule_to_template(rule: str) -> str:
    """``/api/v1/sessions/<int:session_id>/files/<path:name>`` -> ``/sessions/{id}/files/{name}``."""
    return path_template(rule)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_schema(doc: dict, method: str, template: str, status: int) -> dict | None:
    """The JSON schema documented for (``method``, ``template`` path, ``status``), or None."""
    operation = doc["paths"].get(template, {}).get(method.lower())
    if operation is None:
        raise KeyError(f"{method.upper()} {template} is not documented")
    response = operation["responses"].get(str(status))
    if response is None:
        raise KeyError(f"{method.upper()} {template} does not document status {status}")
    if JSON not in response.get("content", {}):
        return None
    return {
        "$ref": "urn:cryofac-openapi#/"
        + _pointer("paths", template, method.lower(), "responses", str(status))
        + "/content/application~1json/schema"
    }


def validate_response(doc: dict, method: str, template: str, status: int, body: Any) -> None:
    """Raise ``jsonschema.ValidationError`` (or KeyError) unless ``body`` matches the document."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    schema = response_schema(doc, method, template, status)
    if schema is None:
        return
    registry = Registry().with_resource(
        "urn:cryofac-openapi", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    Draft202012Validator(schema, registry=registry).validate(body)


@bp.get("/api/v1/openapi.json")
@operation(
    {200: ok({"type": "object", "required": ["openapi", "paths"]})},
    summary="This document",
    auth=False,
)
def openapi_json():
    return jsonify(document())
