"""``cryofac portal``: database, users, facility, demo data, serving."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

DB_OPTION = click.option(
    "--database-url",
    envvar="CRYOFAC_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL (default: SQLite in the instance folder; env CRYOFAC_DATABASE_URL).",
)
CONFIG_OPTION = click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding facility.yaml (default: the embedded config/).",
)


def _seconds_option(name: str, default: float, help_text: str):
    """A positive duration in seconds, its default shown in ``--help``."""
    return click.option(
        name, default=default, show_default=True, type=click.FloatRange(min=0.01), help=help_text
    )


def _app(database_url: str | None, config_dir: Path | None = None, **extra):
    from portal import create_app

    config = dict(extra)
    if database_url:
        config["DATABASE_URL"] = database_url
    if config_dir:
        config["FACILITY_CONFIG_DIR"] = str(config_dir)
    return create_app(config)


def _facility(config_dir: Path | None) -> dict:
    from cryofac.config import load_facility

    return load_facility(config_dir / "facility.yaml" if config_dir else None)


def upgrade_all(url: str) -> list[str]:
    """Run the portal migrations, then instrument_env's when it is installed."""
    from portal import db as portal_db

    portal_db.upgrade(url)
    done = ["portal"]
    if importlib.util.find_spec("instrument_env.db") is not None:
        import instrument_env.db

        instrument_env.db.upgrade(url)
        done.append("instrument_env")
    return done


def load_facility(app, config_dir: Path | None) -> tuple[int, int]:
    from portal.domain.facility import load_facility_into_db

    with app.extensions["cryofac.sessionmaker"]() as db:
        counts = load_facility_into_db(db, _facility(config_dir))
        db.commit()
    return counts


@click.group("portal")
def portal_group() -> None:
    """The facility web portal: database, users, facility, serving."""


@portal_group.command("init-db")
@DB_OPTION
@CONFIG_OPTION
def init_db(database_url: str | None, config_dir: Path | None) -> None:
    """Create or upgrade the database (portal and instrument_env) and load the facility."""
    app = _app(database_url, config_dir)
    url = app.config["DATABASE_URL"]
    parts = upgrade_all(url)
    rooms, instruments = load_facility(app, config_dir)
    click.echo(
        f"database {_safe(url)} at head ({', '.join(parts)}); "
        f"{rooms} rooms, {instruments} instruments loaded"
    )


@portal_group.command("migrate")
@DB_OPTION
@click.option("--revision", default="head", show_default=True)
def migrate(database_url: str | None, revision: str) -> None:
    """Upgrade the portal schema to REVISION, keeping existing data."""
    from portal import db as portal_db

    app = _app(database_url)
    portal_db.upgrade(app.config["DATABASE_URL"], revision)
    click.echo(f"portal schema at {portal_db.current_revision(app.config['DATABASE_URL'])}")


@portal_group.command("load-facility")
@DB_OPTION
@CONFIG_OPTION
def load_facility_cmd(database_url: str | None, config_dir: Path | None) -> None:
    """Load rooms and instruments from facility.yaml (idempotent)."""
    rooms, instruments = load_facility(_app(database_url, config_dir), config_dir)
    click.echo(f"{rooms} rooms, {instruments} instruments loaded")


@portal_group.command("create-user")
@DB_OPTION
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(["researcher", "pi", "staff", "technician", "admin"]),
    default="researcher",
    show_default=True,
)
@click.option("--full-name", default="")
@click.option("--email", default="")
@click.password_option(envvar="CRYOFAC_NEW_PASSWORD")
def create_user(
    database_url: str | None, username: str, role: str, full_name: str, email: str, password: str
) -> None:
    """Create a user (e.g. the first admin: --role admin)."""
    from portal.domain.accounts import create_user as create

    app = _app(database_url)
    with app.extensions["cryofac.sessionmaker"]() as db:
        user = create(
            db, app.extensions["cryofac.hasher"], username, password, role, full_name, email
        )
        db.commit()
        click.echo(f"user {user.username} ({user.role}) created")


def _find_user(db, username: str):
    import sqlalchemy as sa

    from portal.models import User

    user = db.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user


@portal_group.command("set-password")
@DB_OPTION
@click.argument("username")
@click.password_option(envvar="CRYOFAC_NEW_PASSWORD")
def set_password_cmd(database_url: str | None, username: str, password: str) -> None:
    """Reset USERNAME's password; their sessions and API tokens are revoked at once."""
    from portal.domain.accounts import set_password
    from portal.domain.errors import PortalError

    app = _app(database_url)
    with app.extensions["cryofac.sessionmaker"]() as db:
        user = _find_user(db, username)
        try:
            set_password(db, app.extensions["cryofac.hasher"], user, password, reset=True)
        except PortalError as exc:
            raise click.ClickException(exc.message) from None
        db.commit()
    click.echo(f"password of {username} reset; its sessions and API tokens are revoked")


def _set_active(database_url: str | None, username: str, active: bool, reason: str) -> None:
    from portal.domain import audit
    from portal.domain.accounts import revoke_all

    app = _app(database_url)
    with app.extensions["cryofac.sessionmaker"]() as db:
        user = _find_user(db, username)
        before = {"active": user.active}
        user.active = active
        db.flush()
        tokens = revoke_all(db, user) if not active else 0
        action = "activate" if active else "deactivate"
        audit.record(db, None, action, "user", user.id, before, {"active": active}, reason)
        db.commit()
    state = "reactivated" if active else f"deactivated ({tokens} API token(s) revoked)"
    click.echo(f"{username} {state}")


def _activation_command(name: str, active: bool, help_text: str) -> click.Command:
    """``cryofac portal NAME USERNAME [--reason]``: set the account's active flag."""

    @portal_group.command(name, help=help_text)
    @DB_OPTION
    @click.argument("username")
    @click.option("--reason", default="", help="Kept in the audit log.")
    def command(database_url: str | None, username: str, reason: str) -> None:
        _set_active(database_url, username, active, reason)

    return command


deactivate_cmd = _activation_command(
    "deactivate",
    False,
    "Deactivate USERNAME: log-in refused, cookies, API tokens and feed links dead at once.",
)
activate_cmd = _activation_command(
    "activate", True, "Reactivate USERNAME (old cookies and tokens stay dead)."
)


@portal_group.command("revoke-sessions")
@DB_OPTION
@click.argument("username")
def revoke_sessions_cmd(database_url: str | None, username: str) -> None:
    """End every browser session and delete every API token of USERNAME."""
    from portal.domain import audit
    from portal.domain.accounts import revoke_all

    app = _app(database_url)
    with app.extensions["cryofac.sessionmaker"]() as db:
        user = _find_user(db, username)
        tokens = revoke_all(db, user)
        audit.record(db, None, "revoke_sessions", "user", user.id, after={"tokens": tokens})
        db.commit()
    click.echo(f"{username}: every session ended, {tokens} API token(s) revoked")


@portal_group.command("seed-demo")
@DB_OPTION
@CONFIG_OPTION
@click.option("--password", default="cryofac-demo", show_default=True, help="For every demo user.")
def seed_demo(database_url: str | None, config_dir: Path | None, password: str) -> None:
    """Demo users of every role, an active project with allocations, training records."""
    from portal.demo import seed

    app = _app(database_url, config_dir)
    upgrade_all(app.config["DATABASE_URL"])
    load_facility(app, config_dir)
    with app.extensions["cryofac.sessionmaker"]() as db:
        names = seed(db, app.extensions["cryofac.hasher"], password)
        db.commit()
    click.echo(f"demo users (password {password!r}): {', '.join(names)}")


@portal_group.command("worker")
@DB_OPTION
@CONFIG_OPTION
@click.option(
    "--smtp-host",
    envvar="CRYOFAC_SMTP_HOST",
    default=None,
    help="Mail server; none: messages are written to the log (env CRYOFAC_SMTP_HOST).",
)
@click.option(
    "--smtp-port",
    envvar="CRYOFAC_SMTP_PORT",
    default=25,
    show_default=True,
    type=click.IntRange(1, 65535),
)
@click.option(
    "--smtp-from", envvar="CRYOFAC_SMTP_FROM", default="cryofac@localhost", show_default=True
)
@click.option("--smtp-user", envvar="CRYOFAC_SMTP_USER", default=None)
@click.option("--smtp-password", envvar="CRYOFAC_SMTP_PASSWORD", default=None)
@click.option("--smtp-starttls/--no-smtp-starttls", envvar="CRYOFAC_SMTP_STARTTLS", default=False)
@_seconds_option("--poll-s", 2.0, "Seconds between delivery rounds when idle.")
@_seconds_option(
    "--jobs-every-s", 30.0, "Seconds between periodic jobs (finished runs, alarms, pruning)."
)
@click.option("--max-attempts", default=8, show_default=True, type=click.IntRange(1, 100))
@_seconds_option("--backoff-s", 30.0, "First retry delay; doubles per failed attempt.")
@click.option(
    "--keep-delivered-days", default=30.0, show_default=True, type=click.FloatRange(min=0)
)
@click.option(
    "--evaluate-alarms/--no-evaluate-alarms",
    default=True,
    show_default=True,
    help="Also evaluate instrument_env's alarms (escalations) each round.",
)
@_seconds_option(
    "--lease-s", 300.0, "A message claimed by a worker that died is sent again after this long."
)
@click.option("--once", is_flag=True, help="One round of jobs and delivery, then exit.")
def worker(
    database_url: str | None,
    config_dir: Path | None,
    smtp_host: str | None,
    smtp_port: int,
    smtp_from: str,
    smtp_user: str | None,
    smtp_password: str | None,
    smtp_starttls: bool,
    poll_s: float,
    jobs_every_s: float,
    max_attempts: int,
    backoff_s: float,
    keep_delivered_days: float,
    evaluate_alarms: bool,
    lease_s: float,
    once: bool,
) -> None:
    """Deliver the notification outbox (SMTP) and run the periodic jobs, until stopped."""
    import logging
    import signal

    from portal import db as portal_db
    from portal.domain.login_throttle import policy_from_config
    from portal.notify import SmtpSettings
    from portal.worker import Worker, WorkerOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app_config = _app(database_url, config_dir).config
    url = app_config["DATABASE_URL"]
    options = WorkerOptions(
        poll_s=poll_s,
        jobs_every_s=jobs_every_s,
        max_attempts=max_attempts,
        backoff_base_s=backoff_s,
        keep_delivered_days=keep_delivered_days,
        evaluate_alarms=evaluate_alarms,
        lease_s=lease_s,
        config_dir=str(config_dir) if config_dir else None,
        timezone=app_config.get("FACILITY_TIMEZONE"),
        login_policy=policy_from_config(app_config),
    )
    smtp = (
        SmtpSettings(smtp_host, smtp_port, smtp_from, smtp_user, smtp_password, smtp_starttls)
        if smtp_host
        else None
    )
    engine = portal_db.make_engine(url)
    loop = Worker(portal_db.session_factory(engine), smtp, options)
    where = f"SMTP {smtp_host}:{smtp_port}" if smtp else "the log (no --smtp-host)"
    if once:
        report = loop.run_once()
        click.echo(
            f"outbox: {report.sent} delivered, {report.retried} to retry, {report.failed} "
            f"failed; queued {report.queued}; {report.pruned} pruned, "
            f"{report.throttle_pruned} log-in throttle rows pruned"
        )
        engine.dispose()
        return
    click.echo(f"cryofac portal worker: database {_safe(url)}, delivering to {where}")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    loop.run_forever()
    engine.dispose()


@portal_group.command("serve")
@DB_OPTION
@CONFIG_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int, help="Per worker process.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes; more than 1 needs gunicorn (pip install 'cryofac[server]').",
)
@click.option(
    "--external-url",
    envvar="CRYOFAC_EXTERNAL_URL",
    default=None,
    help="Scheme and host people use (e.g. https://cryoem.example.org); feed and download "
    "links are built from it (default: http://HOST:PORT).",
)
@click.option(
    "--secure-cookies/--no-secure-cookies",
    envvar="CRYOFAC_SECURE_COOKIES",
    default=None,
    help="Send the session cookie over HTTPS only (default: on when --external-url is https).",
)
@click.option(
    "--trusted-proxies",
    envvar="CRYOFAC_TRUSTED_PROXIES",
    type=click.IntRange(0, 8),
    default=0,
    show_default=True,
    help="Reverse proxies in front whose X-Forwarded-For/-Proto are believed (0: ignored).",
)
def serve(
    database_url: str | None,
    config_dir: Path | None,
    host: str,
    port: int,
    threads: int,
    workers: int,
    external_url: str | None,
    secure_cookies: bool | None,
    trusted_proxies: int,
) -> None:
    """Serve the portal: waitress (one process) or gunicorn (--workers N)."""
    settings = serve_settings(host, port, external_url, secure_cookies, trusted_proxies)
    app = _app(database_url, config_dir, **settings)
    url = app.config["DATABASE_URL"]
    click.echo(
        f"cryofac portal on http://{host}:{port}/ (database {_safe(url)}, {workers} worker(s);"
        f" links to {settings['EXTERNAL_URL']}, secure cookies"
        f" {'on' if settings['SESSION_COOKIE_SECURE'] else 'off'},"
        f" {trusted_proxies} trusted prox{'y' if trusted_proxies == 1 else 'ies'})"
    )
    if workers == 1:
        from waitress import serve as waitress_serve

        waitress_serve(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="cryofac",
            # a body over the portal's limit is refused (413) before waitress buffers it
            max_request_body_size=int(app.config["MAX_CONTENT_LENGTH"]),
        )
        return
    app.extensions["cryofac.engine"].dispose()
    _gunicorn(database_url or url, config_dir, host, port, threads, workers, settings)


def serve_settings(
    host: str,
    port: int,
    external_url: str | None,
    secure_cookies: bool | None,
    trusted_proxies: int,
) -> dict:
    """The application settings ``serve`` passes on (a URL check included)."""
    from urllib.parse import urlparse

    url = (external_url or f"http://{host}:{port}").rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--external-url")
    secure = parsed.scheme == "https" if secure_cookies is None else secure_cookies
    return {
        "EXTERNAL_URL": url,
        "SESSION_COOKIE_SECURE": secure,
        "TRUSTED_PROXY_HOPS": trusted_proxies,
    }


def _gunicorn(
    url: str,
    config_dir: Path | None,
    host: str,
    port: int,
    threads: int,
    workers: int,
    settings: dict,
) -> None:
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:
        raise click.ClickException(
            "--workers > 1 needs gunicorn: pip install 'cryofac[server]'"
        ) from None

    class PortalServer(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", None)
            self.cfg.set("keepalive", 30)  # seconds an idle keep-alive connection stays open

        def load(self):  # in each worker, after the fork: its own engine and pool
            return _app(url, config_dir, **settings)

    PortalServer().run()


def _safe(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)
