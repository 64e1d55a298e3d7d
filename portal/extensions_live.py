"""Registers the live-run, download, technician, calendar-feed and OpenAPI parts.

``create_app`` calls :func:`register` once; everything here is kept out of the core
factory so the parts can be developed and tested on their own.
"""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """Add the blueprints (and their CSRF exemptions) to ``app``."""
    from portal import openapi, views_downloads, views_ical, views_runs
    from portal.api import files as api_files

    app.register_blueprint(views_runs.bp)
    app.register_blueprint(views_downloads.bp)
    app.register_blueprint(views_ical.bp)
    app.register_blueprint(api_files.bp)
    app.register_blueprint(openapi.bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(api_files.bp)  # bearer-token API, no cookies
    from portal import views_tech

    app.register_blueprint(views_tech.bp)

    @app.context_processor
    def _live_nav() -> dict:
        return {"live_nav": lambda user: nav_links(app, user)}


def nav_links(app: Flask, user) -> list[tuple[str, str]]:
    """(label, URL) of this part's pages for the top navigation of ``user``."""
    from flask import url_for

    from portal.domain.permissions import is_operator

    if user is None:
        return []
    links = [("Runs", url_for("runs.overview"))]
    if is_operator(user):
        links.append(("Rooms", url_for("tech.index")))
    links.append(("Feeds", url_for("ical.feeds")))
    return links
