"""One small builder: the OpenAPI paths of ``/api/v1`` from declarations kept beside
each route.

A route declares its operation with :func:`operation` (summary, request body,
parameters besides those of its URL, and responses built with :func:`ok`,
:func:`error`, :func:`empty` and :func:`binary`); :func:`build_paths` walks the
application's URL map and writes every declared operation under the route's path,
with the path parameters read from the URL rule itself (``<int:x>``: an integer ``id``,
``<path:name>``: a file ``name``, any other: a string ``id``). A route without a
declaration is left out, and the tests fail on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from portal.api.schemas import _ref

JSON = "application/json"
PREFIX = "/api/v1"

NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "public file name from the file list, e.g. map.mrc",
}
RANGE_PARAM = {
    "name": "Range",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "example": "bytes=1048576-"},
    "description": "one byte range (RFC 9110); resumes a download",
}


def ok(schema: dict | str, description: str = "OK", headers: dict | None = None) -> dict:
    """A JSON response; ``schema``: a schema, or the name of a component schema."""
    body = _ref(schema) if isinstance(schema, str) else schema
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": body}}}
    if headers:
        response["headers"] = headers
    return response


def array_of(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


def error(description: str) -> dict:
    """An error response (``{"error": {"code", "message"}}``)."""
    return ok("Error", description)


def empty(description: str) -> dict:
    return {"description": description}


def binary(description: str) -> dict:
    return {"description": description, "content": {"application/octet-stream": {}}}


def query(name: str, schema: dict, description: str | None = None) -> dict:
    parameter = {"name": name, "in": "query", "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def operation(
    responses: Mapping[int, dict],
    *,
    summary: str | None = None,
    body: dict | str | None = None,
    parameters: Iterable[dict] = (),
    auth: bool = True,
) -> Callable:
    """Declare a route's OpenAPI operation (apply it under the route decorator).

    ``auth``: the route takes a bearer token (its security and the 401 answer are
    added); ``body``: the JSON request body's schema (or component name).
    """
    declared: dict[str, Any] = {}
    if auth:
        declared["security"] = [{"bearer": []}]
    if summary:
        declared["summary"] = summary
    declared["parameters"] = list(parameters)
    if body is not None:
        schema = _ref(body) if isinstance(body, str) else body
        declared["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    declared["responses"] = {str(status): r for status, r in responses.items()}
    if auth:
        declared["responses"].setdefault("401", error("missing or invalid token"))

    def attach(view: Callable) -> Callable:
        view.openapi_operation = declared  # type: ignore[attr-defined]
        return view

    return attach


_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def path_template(rule: str) -> str:
    """``/api/v1/sessions/<int:session_id>/files/<path:name>`` -> ``/sessions/{id}/files/{name}``."""
    return _VARIABLE.sub(
        lambda m: "{name}" if m.group(2) == "name" else "{id}", rule.removeprefix(PREFIX)
    )


def path_parameters(rule: str) -> list[dict]:
    """The path parameters of a URL rule, in order."""
    parameters = []
    for converter, variable in _VARIABLE.findall(rule):
        if variable == "name":
            parameters.append(dict(NAME_PARAM))
            continue
        kind = "integer" if converter == "int" else "string"
        parameters.append({"name": "id", "in": "path", "required": True, "schema": {"type": kind}})
    return parameters


def build_paths(rules: Iterable[Any], views: Mapping[str, Callable]) -> dict[str, Any]:
    """The ``paths`` object of every declared ``/api/v1`` route (``rules``: a Flask URL
    map's rules; ``views``: the app's view functions by endpoint)."""
    paths: dict[str, dict] = {}
    for rule in rules:
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        declared = getattr(views[rule.endpoint], "openapi_operation", None)
        if declared is None:
            continue
        parameters = path_parameters(rule.rule) + declared["parameters"]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            entry = {k: v for k, v in declared.items() if k != "parameters"}
            if parameters:
                entry["parameters"] = parameters
            paths.setdefault(path_template(rule.rule), {})[method.lower()] = entry
    return paths
