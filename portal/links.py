"""Absolute links people follow from outside a page (feeds, signed downloads).

Built from the configured ``EXTERNAL_URL`` (scheme and host, e.g.
``https://cryoem.example.org``; the path comes from the route), never from the request's Host
header, which a client or a misconfigured proxy controls. Without ``EXTERNAL_URL``,
Flask's ``SERVER_NAME`` is used when set, else ``http://localhost`` (and a warning is
logged once): ``cryofac portal serve`` always sets one.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for


def external_url(endpoint: str, **values: Any) -> str:
    """The absolute URL of ``endpoint`` under the configured external address."""
    base = current_app.config.get("EXTERNAL_URL")
    if not base:
        if current_app.config.get("SERVER_NAME"):
            return url_for(endpoint, _external=True, **values)
        if not current_app.extensions.get("cryofac.warned_external_url"):
            current_app.logger.warning("EXTERNAL_URL is not set; links point at http://localhost")
            current_app.extensions["cryofac.warned_external_url"] = True
        base = "http://localhost"
    return str(base).rstrip("/") + url_for(endpoint, **values)
