"""Server-rendered pages, one small blueprint per area; the browser logs in with a cookie."""

from __future__ import annotations

from flask import Flask, g

from portal.views.common import load_user


def register_views(app: Flask) -> None:
    from portal.domain.timezones import local_text, use_display_zone
    from portal.views import account, admin, auth, calendar, projects, staff
    from portal.views.calendar import load_facility_tz

    # read once at start-up, not by the first burst of concurrent requests
    tz = app.extensions["cryofac.tz"] = load_facility_tz(
        app.config.get("FACILITY_CONFIG_DIR"), app.config.get("FACILITY_TIMEZONE")
    )
    app.before_request(lambda: use_display_zone(tz))  # messages name the facility zone
    app.before_request(load_user)
    app.add_template_filter(lambda moment: local_text(moment, tz), "local")
    app.add_template_filter(lambda moment: local_text(moment, tz, seconds=True), "local_s")
    for module in (auth, account, calendar, projects, staff, admin):
        app.register_blueprint(module.bp)

    @app.context_processor
    def _inject() -> dict:
        from portal.domain import permissions

        return {"permissions": permissions, "current_user": g.get("user"), "facility_tz": tz}

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response
