"""The facility web portal: a Flask application factory (flaskr style, no global app).

Configuration keys (all optional): ``DATABASE_URL`` (default: SQLite under the
instance folder), ``SECRET_KEY`` (default: ``CRYOFAC_SECRET_KEY`` or a random key kept
in the instance folder), ``FACILITY_CONFIG_DIR`` (default: the embedded ``cryofac/config/``),
``TOKEN_TTL_H``, ``PASSWORD_TIME_COST``, ``PASSWORD_MEMORY_KIB``,
``LOGIN_MAX_FAILURES`` (failures before delays start), ``LOGIN_BASE_DELAY_S`` and
``LOGIN_MAX_DELAY_S`` (the first and the longest delay, doubling in between),
``LOGIN_WINDOW_MIN`` (minutes until failures are forgotten), ``TRUSTED_PROXY_HOPS``
(reverse proxies in front whose ``X-Forwarded-For``/``-Proto`` are believed; 0 ignores
them), ``EXTERNAL_URL`` (the address people use, e.g. ``https://cryoem.example.org``;
links in pages, feeds and downloads are built from it, never from the Host header),
``SESSION_COOKIE_SECURE``, ``FACILITY_TIMEZONE`` (overrides facility.yaml),
``MAX_CONTENT_LENGTH`` (bytes, default 16 MiB), ``MAX_JSON_DEPTH`` (default 64).
``CRYOFAC_DATABASE_URL``,
``CRYOFAC_SECRET_KEY``, ``CRYOFAC_PASSWORD_TIME_COST`` and ``CRYOFAC_PASSWORD_MEMORY_KIB``
in the environment give defaults that ``config`` overrides.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

DEFAULTS: dict[str, Any] = {
    "TOKEN_TTL_H": 24.0,
    "PASSWORD_TIME_COST": 3,
    "PASSWORD_MEMORY_KIB": 65536,
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_BASE_DELAY_S": 1.0,
    "LOGIN_MAX_DELAY_S": 300.0,
    "LOGIN_WINDOW_MIN": 60.0,
    "TRUSTED_PROXY_HOPS": 0,
    "EXTERNAL_URL": None,
    "SESSION_COOKIE_SECURE": False,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": None,
}


def _secret_key(instance: Path) -> str:
    if os.environ.get("CRYOFAC_SECRET_KEY"):
        return os.environ["CRYOFAC_SECRET_KEY"]
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(config: dict | None = None) -> Flask:
    """Build the portal application for ``config`` (see the module docstring for keys)."""
    from flask_wtf.csrf import CSRFProtect

    from cryofac.config import instance_dir
    from portal import db as portal_db
    from portal import edge
    from portal.domain.accounts import password_hasher

    app = Flask(__name__, instance_path=str(instance_dir()), instance_relative_config=True)
    edge.install_converters(app)  # before any route: ids in URLs fit the database
    app.config.update(DEFAULTS)
    app.config["DATABASE_URL"] = os.environ.get("CRYOFAC_DATABASE_URL")
    for key in ("PASSWORD_TIME_COST", "PASSWORD_MEMORY_KIB"):  # e.g. cheaper on a test box
        if os.environ.get(f"CRYOFAC_{key}"):
            app.config[key] = int(os.environ[f"CRYOFAC_{key}"])
    app.config.update(config or {})
    instance = Path(app.instance_path)
    if not app.config.get("DATABASE_URL") or not app.config.get("SECRET_KEY"):
        instance.mkdir(parents=True, exist_ok=True)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'portal.sqlite3'}"
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(instance)

    engine = portal_db.make_engine(app.config["DATABASE_URL"])
    app.extensions["cryofac.engine"] = engine
    if engine.dialect.name == "postgresql":  # for portal_db.READ_ONLY_ENDPOINTS (same pool)
        app.extensions["cryofac.autocommit_engine"] = engine.execution_options(
            isolation_level="AUTOCOMMIT"
        )
    app.extensions["cryofac.sessionmaker"] = portal_db.session_factory(engine)
    app.extensions["cryofac.hasher"] = password_hasher(
        int(app.config["PASSWORD_TIME_COST"]), int(app.config["PASSWORD_MEMORY_KIB"])
    )
    from portal.domain.accounts import dummy_hash

    dummy_hash(app.extensions["cryofac.hasher"])  # now, not in the first unknown user's log-in
    app.teardown_appcontext(portal_db.close_db)

    edge.install(app)  # body size, NUL characters, JSON depth
    hops = int(app.config.get("TRUSTED_PROXY_HOPS") or 0)
    if hops > 0:  # only then is X-Forwarded-For believed (werkzeug ignores it otherwise)
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    csrf = CSRFProtect(app)

    from portal import openapi, views
    from portal.api import bp as api_bp
    from portal.api import files as api_files

    # every blueprint of the portal, in one list: the JSON API, its file downloads, the
    # API's description, then the server-rendered pages
    for blueprint in (api_bp, api_files.bp, openapi.bp, *views.blueprints()):
        app.register_blueprint(blueprint)
    for blueprint in (api_bp, api_files.bp):  # bearer tokens, not cookies: no CSRF
        csrf.exempt(blueprint)
    views.install(app)
    return app
