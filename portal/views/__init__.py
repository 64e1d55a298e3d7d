"""Server-rendered pages, one small blueprint per area; the browser logs in with a cookie.

:func:`blueprints` lists the page blueprints (``create_app`` registers them with the
API's, in one list); :func:`install` adds what every page needs: the cookie user, the
facility's time zone, the navigation and the security headers.
"""

from __future__ import annotations

from flask import Blueprint, Flask, g, url_for

from portal.views.common import load_user


def blueprints() -> list[Blueprint]:
    """Every page area: log-in and account, calendar, projects, staff, admin, processing
    runs, downloads, calendar feeds and the technicians' room view."""
    from portal.views import (
        account,
        admin,
        auth,
        calendar,
        downloads,
        feeds,
        projects,
        runs,
        staff,
        tech,
    )

    modules = (auth, account, calendar, projects, staff, admin, runs, downloads, feeds, tech)
    return [module.bp for module in modules]


def install(app: Flask) -> None:
    """Per-request hooks, template filters and globals of the server-rendered pages."""
    from portal.domain import permissions
    from portal.domain.timezones import local_text, use_display_zone
    from portal.views.calendar import load_facility_tz

    # read once at start-up, not by the first burst of concurrent requests
    tz = app.extensions["cryofac.tz"] = load_facility_tz(
        app.config.get("FACILITY_CONFIG_DIR"), app.config.get("FACILITY_TIMEZONE")
    )
    app.before_request(lambda: use_display_zone(tz))  # messages name the facility zone
    app.before_request(load_user)
    app.add_template_filter(lambda moment: local_text(moment, tz), "local")
    app.add_template_filter(lambda moment: local_text(moment, tz, seconds=True), "local_s")

    @app.context_processor
    def _inject() -> dict:
        return {
            "permissions": permissions,
            "current_user": g.get("user"),
            "facility_tz": tz,
            "live_nav": nav_links,
        }

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response


def nav_links(user) -> list[tuple[str, str]]:
    """(label, URL) of the run, room and feed pages for the top navigation of ``user``."""
    from portal.domain.permissions import is_operator

    if user is None:
        return []
    links = [("Runs", url_for("runs.overview"))]
    if is_operator(user):
        links.append(("Rooms", url_for("tech.index")))
    links.append(("Feeds", url_for("ical.feeds")))
    return links
