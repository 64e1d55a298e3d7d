"""``cryofac env``: room-environment monitoring from the command line.

The database is the portal's (``--db`` or ``CRYOFAC_DATABASE_URL``; default: the
portal's SQLite file ``instance/portal.sqlite3``). Configuration: ``CRYOFAC_CONFIG_DIR``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from cryofac.config import default_database_url

DEFAULT_DB = default_database_url()


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=name) from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset", param_hint=name)
    return parsed.astimezone(UTC)


class _Ctx:
    def __init__(self, url: str):
        self.url = url
        self._sessions = None

    def sessions(self):
        if self._sessions is None:
            import sqlalchemy as sa

            from instrument_env import deadline
            from instrument_env.db import current_revision, make_engine, session_factory

            engine = make_engine(self.url)
            deadline.watch_engine(engine)  # for commands that bound their work (gate)
            try:
                revision = current_revision(engine)
            except sa.exc.SQLAlchemyError as exc:
                watch = deadline.current()
                detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                if watch is not None and watch.fired.is_set():
                    detail = f"no answer within {watch.seconds:g} s"
                raise click.ClickException(f"cannot open the database: {detail}") from None
            if revision is None:
                raise click.ClickException(
                    "the database has no instrument_env tables; run 'cryofac env init-db' "
                    "(or 'cryofac portal init-db')"
                )
            self._sessions = session_factory(engine)
        return self._sessions

    def config(self):
        from instrument_env.limits import load_env_config

        return load_env_config()


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group("env")
@click.option(
    "--db",
    "url",
    envvar="CRYOFAC_DATABASE_URL",
    default=DEFAULT_DB,
    show_default="instance/portal.sqlite3",
    help="SQLAlchemy database URL (env CRYOFAC_DATABASE_URL).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more (INFO).")
@click.pass_context
def env_group(ctx: click.Context, url: str, verbose: bool) -> None:
    """Room environment: readings, limits, alarms, the session gate."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    ctx.obj = _Ctx(url)


@env_group.command("init-db")
@pass_ctx
def init_db(obj: _Ctx) -> None:
    """Create or upgrade instrument_env's tables (its own Alembic history)."""
    from instrument_env.db import current_revision, upgrade

    upgrade(obj.url)
    click.echo(f"instrument_env schema at revision {current_revision(obj.url)}")


@env_group.command("ingest-csv")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--source", default="csv", show_default=True, help="Source label stored.")
@click.option(
    "--timezone",
    default=None,
    help="IANA time zone for times without an offset (e.g. Asia/Shanghai); else rejected.",
)
@click.option("--batch-size", default=5000, show_default=True)
@pass_ctx
def ingest_csv(
    obj: _Ctx, files: tuple[str, ...], source: str, timezone: str | None, batch_size: int
) -> None:
    """Import a logger's CSV export (long or wide layout, see instrument_env.csvimport).

    Long: columns sensor,quantity,ts,value,unit[,band]. Wide: a ts column and one
    SENSOR/QUANTITY[/BAND] column per channel. Good rows are stored even when some are
    bad; every bad reading is reported with its line (and column), and the exit status
    is 1 when any reading or file was rejected.
    """
    from instrument_env.csvimport import MalformedCSV, import_csv

    config = obj.config()
    failed = 0
    for name in files:
        try:
            # undecodable rows are refused one by one (surrogateescape), not the file
            handle = Path(name).open(  # noqa: SIM115 (with below)
                newline="", encoding="utf-8-sig", errors="surrogateescape"
            )
        except OSError as exc:
            click.echo(f"{name}: cannot open ({exc.strerror})", err=True)
            failed += 1
            continue
        with handle:
            try:
                summary = import_csv(
                    handle,
                    obj.sessions(),
                    config,
                    source=source,
                    timezone=timezone,
                    batch_size=batch_size,
                )
            except MalformedCSV as exc:
                click.echo(f"{name}: {exc}", err=True)
                failed += 1
                continue
        click.echo(summary.line(name))
        for where, reason in summary.reasons[:50]:
            click.echo(f"{name}: {where}: {reason}", err=True)
        if len(summary.reasons) > 50:
            click.echo(
                f"{name}: ... and {len(summary.reasons) - 50} more rejected readings", err=True
            )
        failed += bool(summary.rejected)
    if failed:
        raise click.ClickException(f"{failed} file(s) had rejected readings or could not be read")


_QOS_HELP = (
    "Subscription QoS. 1 (default): at least once, acknowledged after commit. 0: no guarantee."
)


@env_group.command("mqtt")
@click.option("--host", default="127.0.0.1", show_default=True, help="MQTT broker host.")
@click.option("--port", default=1883, show_default=True, help="MQTT broker port (TLS: often 8883).")
@click.option(
    "--client-id",
    default="cryofac-env-ingest",
    show_default=True,
    envvar="CRYOFAC_MQTT_CLIENT_ID",
    help="Fixed client id: the broker keeps the session (queued messages) under it. "
    "One per ingester process (env CRYOFAC_MQTT_CLIENT_ID).",
)
@click.option(
    "--protocol",
    type=click.Choice(["5", "3.1.1"]),
    default="5",
    show_default=True,
    help="MQTT protocol version (5: clean start off + session expiry; 3.1.1: clean session off).",
)
@click.option(
    "--session-expiry",
    type=click.IntRange(0, 0xFFFFFFFF),
    default=7 * 86400,
    show_default=True,
    help="Seconds the broker keeps the session while the ingester is away (MQTT 5).",
)
@click.option("--qos", type=click.IntRange(0, 1), default=1, help=_QOS_HELP)
@click.option(
    "--username", envvar="CRYOFAC_MQTT_USERNAME", help="Broker user (env CRYOFAC_MQTT_USERNAME)."
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    envvar="CRYOFAC_MQTT_PASSWORD_FILE",
    help="File whose first line is the broker password (env CRYOFAC_MQTT_PASSWORD_FILE; "
    "or the password itself in CRYOFAC_MQTT_PASSWORD).",
)
@click.option(
    "--share-group",
    default=None,
    help="Join this MQTT shared subscription ($share/GROUP/...): several ingesters, each "
    "with its own --client-id, split the messages.",
)
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA certificate (PEM): use TLS.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Client certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Client certificate's key (PEM).")
@click.option("--batch-size", default=20000, help="Most readings per commit (20000).")
@click.option("--flush-interval", default=1.0, help="Most seconds a reading waits for commit (1).")
@click.option("--idle-flush", default=0.05, help="Commit after this many idle seconds (0.05).")
@click.option(
    "--receive-maximum",
    type=click.IntRange(1, 65535),
    default=10000,
    show_default=True,
    help="Most unacknowledged messages the broker may send at once (MQTT 5).",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(2),
    default=1 << 20,
    show_default=True,
    help="Larger payloads are refused unparsed (logged, acknowledged).",
)
@click.option(
    "--max-depth",
    type=click.IntRange(2),
    default=8,
    show_default=True,
    help="Payloads nested deeper are refused unparsed (logged, acknowledged).",
)
@click.option(
    "--evaluate-every",
    default=10.0,
    show_default=True,
    help="Seconds between alarm evaluations (0: never).",
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@pass_ctx
def mqtt_cmd(
    obj: _Ctx,
    host: str,
    port: int,
    client_id: str,
    protocol: str,
    session_expiry: int,
    qos: int,
    username: str | None,
    password_file: str | None,
    share_group: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    batch_size: int,
    flush_interval: float,
    idle_flush: float,
    receive_maximum: int,
    max_message_bytes: int,
    max_depth: int,
    evaluate_every: float,
    duration: float | None,
) -> None:
    """Subscribe to cryofac/env/ROOM/SENSOR and commit readings in batches.

    Keeps a persistent session on the broker (fixed --client-id) and acknowledges each
    message only after its readings are committed, so a crash or restart loses nothing
    the broker accepted. The broker must persist and not cap its queues: see
    cryofac/config/mosquitto.conf. Stops cleanly on SIGTERM or Ctrl-C.
    """
    import os
    import signal
    import threading

    from instrument_env.mqtt import BatchOptions, BrokerOptions, PayloadLimits, Subscriber

    password = os.environ.get("CRYOFAC_MQTT_PASSWORD")
    if password_file:
        try:
            lines = Path(password_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"{password_file}: cannot read ({exc})", param_hint="--password-file"
            ) from None
        password = lines[0] if lines else ""
    if password is not None and username is None:
        raise click.UsageError("a password needs --username (or CRYOFAC_MQTT_USERNAME)")
    for name, path in (("--tls-ca", tls_ca), ("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint=name)
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    try:
        broker = BrokerOptions(
            host=host,
            port=port,
            client_id=client_id,
            protocol=protocol,
            session_expiry_s=session_expiry,
            qos=qos,
            username=username,
            password=password,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            receive_maximum=receive_maximum,
            share_group=share_group,
        )
        batching = BatchOptions(
            batch_size=batch_size, flush_interval_s=flush_interval, idle_flush_s=idle_flush
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    subscriber = Subscriber(
        obj.sessions(),
        broker=broker,
        batching=batching,
        limits=PayloadLimits(max_bytes=max_message_bytes, max_depth=max_depth),
        config=obj.config(),
        evaluate_every_s=evaluate_every or None,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    subscriber.start()
    click.echo(
        f"subscribed to {broker.subscription} on {broker.address} as {broker.client_id!r} "
        f"(QoS {broker.qos}); Ctrl-C to stop",
        err=True,
    )
    try:
        stats = subscriber.run(stop=stop, duration_s=duration)
    except KeyboardInterrupt:
        stats = subscriber.stats
    click.echo(
        f"{stats.messages} messages, {stats.malformed} malformed, {stats.poison} not storable, "
        f"{stats.accepted} readings stored, {stats.rejected + stats.refused} rejected"
    )


FAULT_HELP = (
    "KIND@TARGET:START_MIN:DURATION_MIN[:MAGNITUDE], TARGET a room or sensor id, START_MIN "
    "minutes after --start; kinds: ac_failure, door_open, sensor_silent, "
    "magnetic_disturbance, vibration. Repeatable."
)


def _parse_fault(spec: str, start: datetime, config):
    from instrument_env.sim import FAULT_KINDS, Fault

    try:
        kind, rest = spec.split("@", 1)
        parts = rest.split(":")
        target, t0, minutes = parts[0], float(parts[1]), float(parts[2])
        magnitude = float(parts[3]) if len(parts) > 3 else None
    except (ValueError, IndexError):
        raise click.BadParameter(f"{spec!r}: expected {FAULT_HELP.split(',')[0]}") from None
    if kind not in FAULT_KINDS:
        raise click.BadParameter(f"{spec!r}: unknown fault {kind!r}")
    where = {}
    if target in config.rooms:
        where["room"] = target
    elif target in config.sensors:
        where["sensor"] = target
    else:
        raise click.BadParameter(f"{spec!r}: {target!r} is neither a room nor a sensor")
    begin = start + timedelta(minutes=t0)
    return Fault(kind, begin, begin + timedelta(minutes=minutes), magnitude=magnitude, **where)


@env_group.command("simulate")
@click.option(
    "--to", "target", type=click.Choice(["db", "mqtt", "http"]), default="db", show_default=True
)
@click.option("--start", help="ISO 8601 start (default: --hours before now).")
@click.option("--hours", type=float, default=2.0, show_default=True, help="Length simulated.")
@click.option("--room", "rooms", multiple=True, help="Only these rooms (repeatable).")
@click.option("--fault", "faults", multiple=True, help=FAULT_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--raw", is_flag=True, help="Send raw 1 kHz magnetometer/geophone samples (reduced at ingest)."
)
@click.option(
    "--realtime",
    type=float,
    default=None,
    help="Publish at this many times wall-clock speed (e.g. 1 or 60) instead of at once.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="MQTT broker host.")
@click.option("--port", default=1883, show_default=True, help="MQTT broker port.")
@click.option(
    "--url", default="http://127.0.0.1:5000", show_default=True, help="Portal base URL (--to http)."
)
@click.option("--token", envvar="CRYOFAC_API_TOKEN", help="Bearer token (env CRYOFAC_API_TOKEN).")
@pass_ctx
def simulate(
    obj: _Ctx,
    target: str,
    start: str | None,
    hours: float,
    rooms: tuple[str, ...],
    faults: tuple[str, ...],
    seed: int,
    raw: bool,
    realtime: float | None,
    host: str,
    port: int,
    url: str,
    token: str | None,
) -> None:
    """Simulated readings for every configured sensor, with injected faults.

    Writes them to the database (--to db), publishes them on MQTT (--to mqtt) or POSTs
    them to the portal's /api/v1/env/readings (--to http, needs a technician's token).
    """
    from instrument_env.sim import EnvSimulator

    config = obj.config()
    for room in rooms:
        if room not in config.rooms:
            raise click.BadParameter(f"unknown room {room!r}", param_hint="--room")
    begin = _parse_time(start, "--start")
    if begin is None:
        begin = datetime.now(UTC) if realtime else datetime.now(UTC) - timedelta(hours=hours)
    end = begin + timedelta(hours=hours)
    fault_list = [_parse_fault(spec, begin, config) for spec in faults]
    sim = EnvSimulator(config, seed=seed, rooms=rooms or None, raw=raw)
    batches = sim.batches(begin, end, fault_list)
    pace = None
    if realtime:
        wall0 = time.monotonic()

        def pace(batch: list[dict]) -> None:
            if batch:
                due = (datetime.fromisoformat(batch[0]["ts"]) - begin).total_seconds() / realtime
                delay = wall0 + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    if target == "http":
        if not token:
            raise click.UsageError("--to http needs --token (or CRYOFAC_API_TOKEN)")
        count = _post_readings(batches, url, token, pace)
        click.echo(f"posted {count} readings ({begin.isoformat()} .. {end.isoformat()})")
        return
    if target == "mqtt":
        from instrument_env.mqtt import publish_readings

        count = publish_readings(batches, host=host, port=port, config=config, pace=pace)
        click.echo(f"published {count} readings ({begin.isoformat()} .. {end.isoformat()})")
        return
    from instrument_env.ingest import ingest_readings

    total = 0
    chunk: list[dict] = []
    with obj.sessions()() as session:
        for batch in batches:
            if pace is not None:
                pace(batch)
            chunk.extend(batch)
            if len(chunk) >= 5000 or (pace is not None and chunk):
                total += ingest_readings(session, chunk, source="sim", config=config).accepted
                session.commit()
                chunk = []
        if chunk:
            total += ingest_readings(session, chunk, source="sim", config=config).accepted
            session.commit()
    click.echo(f"stored {total} readings ({begin.isoformat()} .. {end.isoformat()})")


def _post_readings(batches, base_url: str, token: str, pace) -> int:
    import urllib.error
    import urllib.request

    endpoint = base_url.rstrip("/") + "/api/v1/env/readings"
    count = 0
    chunk: list[dict] = []

    def send(items: list[dict]) -> int:
        request = urllib.request.Request(
            endpoint,
            data=json.dumps(items).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise click.ClickException(f"{endpoint}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise click.ClickException(f"{endpoint}: {exc}") from None
        return int(body.get("accepted", 0))

    for batch in batches:
        if pace is not None:
            pace(batch)
        chunk.extend(batch)
        if len(chunk) >= 5000 or (pace is not None and chunk):
            count += send(chunk)
            chunk = []
    if chunk:
        count += send(chunk)
    return count


_GATE_TIMEOUT = (
    "Refuse when the database has not answered within this many seconds, default 5 "
    "(plus the connect timeout for a new connection)."
)


@env_group.command("gate")
@click.argument("instrument")
@click.option("--at", help="ISO 8601 time to judge (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, help=_GATE_TIMEOUT)
@pass_ctx
def gate(obj: _Ctx, instrument: str, at: str | None, as_json: bool, timeout: float) -> None:
    """May a session start on INSTRUMENT? Exit status 0 allowed, 1 refused."""
    from cryofac.errors import ConfigError
    from instrument_env.deadline import bounded
    from instrument_env.gate import GateDecision, evaluate_gate

    when = _parse_time(at, "--at")
    try:
        config = obj.config()
    except ConfigError as exc:
        config = None
        decision = GateDecision(False, [f"configuration cannot be read: {exc}"], decided=False)
    if config is not None:
        # all of it bounded: the schema check, the decision, the rollback at the end
        with bounded(timeout), obj.sessions()() as session:
            decision = evaluate_gate(session, instrument, when, config=config, timeout_s=timeout)
    if as_json:
        click.echo(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(f"{instrument}: {'allowed' if decision.allowed else 'REFUSED'}")
        for reason in decision.reasons:
            click.echo(f"  - {reason}")
    if not decision.allowed:
        raise click.ClickException(
            f"{instrument}: session refused ({len(decision.reasons)} reason(s) above)"
        )


@env_group.command("evaluate")
@click.option("--every", type=float, default=None, help="Repeat every N seconds (Ctrl-C stops).")
@pass_ctx
def evaluate_cmd(obj: _Ctx, every: float | None) -> None:
    """Advance alarms to now (fire, clear, escalate) and refresh rollups."""
    from instrument_env.alarms import evaluate
    from instrument_env.storage import refresh_rollups

    config = obj.config()
    while True:
        with obj.sessions()() as session:
            changed = evaluate(session, datetime.now(UTC), config)
            refresh_rollups(session)
            session.commit()
        for alarm in changed:
            click.echo(f"alarm #{alarm.id} {alarm.state} [{alarm.severity}] {alarm.message}")
        if not every:
            return
        time.sleep(every)


#: seconds the monitor may take to stop after SIGTERM/SIGINT before it is cut off
STOP_GRACE_S = 5


@env_group.command("monitor")
@click.option(
    "--every", type=float, default=10.0, show_default=True, help="Seconds between evaluations."
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--no-rollups", is_flag=True, help="Do not refresh rollups each cycle.")
@pass_ctx
def monitor_cmd(obj: _Ctx, every: float, duration: float | None, no_rollups: bool) -> None:
    """The alarm monitor service: evaluate alarms (fire, clear, escalate, no data) every
    --every seconds whatever the ingest path; survives database and configuration
    faults (reported, retried). Stops on SIGTERM/SIGINT."""
    import signal
    import threading

    from instrument_env.db import make_engine, session_factory
    from instrument_env.monitor import MonitorOptions, run_monitor

    if every <= 0:
        raise click.BadParameter("must be positive", param_hint="--every")
    stop = threading.Event()

    def stop_soon(*_) -> None:
        # stop after the cycle in progress; one blocked (a locked or silent database: up
        # to its 30 s busy/connect timeouts) is cut off after STOP_GRACE_S by SIGALRM's
        # default action — its transaction is rolled back, and a parent that died
        # (PR_SET_PDEATHSIG) leaves no monitor behind for long
        stop.set()
        signal.alarm(STOP_GRACE_S)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_soon)
    sessions = session_factory(make_engine(obj.url))  # no revision check: retried if absent
    click.echo(f"alarm monitor: evaluating every {every:g} s; SIGTERM stops", err=True)
    # The cycles run in a thread: Python runs signal handlers in the main thread only
    # between bytecodes, never while it waits inside SQLite; a join with a timeout is
    # where the handler runs at once.
    done: dict = {}

    def work() -> None:
        done["stats"] = run_monitor(
            sessions,
            MonitorOptions(every_s=every, rollups=not no_rollups),
            stop=stop,
            duration_s=duration,
            on_event=lambda line: click.echo(line),
        )

    worker = threading.Thread(target=work, name="alarm-monitor", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    signal.alarm(0)
    if "stats" not in done:
        raise click.ClickException("the alarm monitor stopped on an unexpected error")
    stats = done["stats"]
    click.echo(
        f"{stats.cycles} evaluations, {stats.failures} failed, {stats.changed} alarm changes"
    )


@env_group.command("alarms")
@click.option(
    "--state",
    type=click.Choice(["open", "unacknowledged", "pending", "firing", "acknowledged", "resolved"]),
    default=None,
)
@click.option("--room", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def alarms_cmd(obj: _Ctx, state: str | None, room: str | None, as_json: bool) -> None:
    """List alarms, newest first."""
    from instrument_env.alarms import list_alarms

    with obj.sessions()() as session:
        found = list_alarms(session, state, room=room)
        rows = [a.to_dict() for a in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no alarms")
    for a in rows:
        click.echo(
            f"#{a['id']:<5} {a['state']:<12} {a['severity']:<8} {a['room']:<15} "
            f"{a['started_at'][:19]}  {a['message']}"
        )


@env_group.command("ack")
@click.argument("alarm_id", type=int)
@click.option("--comment", required=True, help="Why / what is being done.")
@click.option("--user", default=None, help="Who acknowledges (default: $USER).")
@pass_ctx
def ack(obj: _Ctx, alarm_id: int, comment: str, user: str | None) -> None:
    """Acknowledge a firing alarm with a comment."""
    import getpass

    from instrument_env.alarms import acknowledge

    with obj.sessions()() as session:
        alarm = acknowledge(session, alarm_id, user or getpass.getuser(), comment)
        session.commit()
        click.echo(f"alarm #{alarm.id} acknowledged by {alarm.acknowledged_by}")


@env_group.command("provenance")
@click.argument("target")
@click.option("--start", required=True, help="ISO 8601 start of the window.")
@click.option("--end", required=True, help="ISO 8601 end of the window.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
@pass_ctx
def provenance(obj: _Ctx, target: str, start: str, end: str, out: str | None) -> None:
    """Environmental provenance of TARGET (instrument or room) over a time window."""
    from instrument_env.provenance import summarize, write_provenance

    begin, finish = _parse_time(start, "--start"), _parse_time(end, "--end")
    if finish <= begin:
        raise click.BadParameter("must be after --start", param_hint="--end")
    with obj.sessions()() as session:
        if out:
            summary = write_provenance(out, session, target, begin, finish, config=obj.config())
            click.echo(f"wrote {out} ({len(summary['channels'])} channels)")
        else:
            summary = summarize(session, target, begin, finish, config=obj.config())
            click.echo(json.dumps(summary, indent=2, ensure_ascii=False))


@env_group.command("maintain")
@pass_ctx
def maintain(obj: _Ctx) -> None:
    """Refresh rollups and apply the retention policy of limits.yaml (``retention:``)."""
    from instrument_env.storage import apply_retention, retention_policy

    with obj.sessions()() as session:
        deleted = apply_retention(session, datetime.now(UTC), retention_policy(obj.config()))
        session.commit()
    click.echo(
        f"deleted {deleted['raw']} raw readings, {deleted['60']} 1-min and "
        f"{deleted['3600']} 1-h rollups"
    )
