"""Portal latency under load: the week calendar page and the bookings API on PostgreSQL.

Builds a throw-away PostgreSQL database with the facility, 10,000 bookings (by default)
spread over the four instruments, every user with an e-mail address and 100,000
delivered notices in the outbox (``--notices``), serves the portal in a separate process
(``cryofac portal serve``, waitress) beside ``cryofac portal worker`` delivering the
new notices to a local SMTP server (aiosmtpd; ``--no-worker`` to leave it out), and runs
N concurrent clients (threads, each with
its own keep-alive connection, logged in through the real log-in form or holding a
bearer token). Each client loops over three requests:

* ``GET /calendar/<instrument>?week=<a random week with bookings>`` (HTML page, cookie)
* ``GET /api/v1/bookings?instrument_id=&start=&end=`` (one week, bearer token)
* ``POST /api/v1/bookings`` (a free slot; every rule checked, 201 expected)

and records the wall-clock latency of each. Prints p50/p95/p99 per request kind and
writes them as JSON (``--out``).

    python benchmarks/portal_latency.py --clients 50 --bookings 10000 --seconds 30
    python benchmarks/portal_latency.py --clients 50 --think-ms 1000 --notices 100000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

DEFAULT_PG = os.environ.get(
    "CRYOFAC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
INSTRUMENTS = ("krios1", "glacios1", "vitrobot1", "glowdischarge1")
PASSWORD = "benchmark-password"
QUEUE_DEPTH = re.compile(r"Task queue depth is (\d+)")


def build_database(
    server_url: str, n_bookings: int, n_clients: int, n_notices: int = 0
) -> tuple[str, str, dict]:
    """A fresh database with the facility, users (each with an e-mail address), projects,
    ``n_bookings`` bookings and ``n_notices`` delivered outbox messages."""
    from cryofac.config import load_facility
    from portal import db as portal_db
    from portal.domain import accounts, projects
    from portal.domain.facility import load_facility_into_db
    from portal.models import Booking, OutboxMessage, Project, User

    name = f"cryofac_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    portal_db.upgrade(url)
    engine = portal_db.make_engine(url)
    hasher = accounts.password_hasher(1, 1024)  # cheap: log-ins happen before timing
    factory = portal_db.session_factory(engine)
    tokens: dict[str, tuple[str, int]] = {}
    with factory() as db:
        facility = load_facility()
        for instrument in facility["instruments"]:  # the bookings reach ~14 months ahead
            instrument["booking"]["horizon_days"] = 3660
        load_facility_into_db(db, facility)
        staff = accounts.create_user(db, hasher, "staff", PASSWORD, "staff")
        n_projects = max(n_clients // 2, 1)
        project_ids = []
        users: list[tuple[User, int]] = []
        for p in range(n_projects):
            pi = accounts.create_user(db, hasher, f"pi{p}", PASSWORD, "pi")
            project = projects.create_project(db, pi, f"B-{p:03d}", f"Benchmark project {p}")
            for state in ("submitted", "approved", "active"):
                projects.change_state(db, pi if state == "submitted" else staff, project, state)
            for kind in ("microscope", "vitrification_robot", "glow_discharger"):
                projects.set_allocation(db, staff, project, kind, 1e6)
            project_ids.append(project.id)
            users.append((pi, project.id))
        for c in range(n_clients - len(users)):
            pid = project_ids[c % n_projects]
            user = accounts.create_user(db, hasher, f"r{c}", PASSWORD, "researcher")
            projects.add_member(db, staff, db.get(Project, pid), user)
            users.append((user, pid))
        for user, _ in users:
            user.email = f"{user.username}@bench.example.org"
            for instrument in INSTRUMENTS:
                projects.grant_training(db, staff, user, instrument)
        db.commit()
        for user, pid in users:
            tokens[user.username] = (accounts.issue_token(db, user, 24), pid)
        db.commit()
        # history and future: back-to-back 8 h bookings, centred on now
        per_instrument = n_bookings // len(INSTRUMENTS)
        t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=8 * per_instrument // 2
        )
        rows = []
        for instrument in INSTRUMENTS:
            for k in range(per_instrument):
                user, pid = users[k % len(users)]
                start = t0 + timedelta(hours=8 * k)
                rows.append(
                    {
                        "instrument_id": instrument,
                        "project_id": pid,
                        "user_id": user.id,
                        "start_at": start,
                        "end_at": start
                        + timedelta(hours=8 if instrument != "glowdischarge1" else 2),
                        "status": "confirmed",
                        "note": "",
                        "created_at": t0,
                    }
                )
        db.execute(sa.insert(Booking), rows)
        db.commit()
        sent = datetime.now(UTC) - timedelta(days=1)
        for first in range(0, n_notices, 10_000):  # delivered notices, as after months of use
            db.execute(
                sa.insert(OutboxMessage),
                [
                    {
                        "kind": "booking_confirmed",
                        "recipients": users[k % len(users)][0].email,
                        "subject": f"Booking confirmed: Glacios, notice {k}",
                        "body": "Your booking is confirmed.\n",
                        "status": "sent",
                        "attempts": 1,
                        "created_at": sent,
                        "next_attempt_at": sent,
                        "sent_at": sent,
                    }
                    for k in range(first, min(first + 10_000, n_notices))
                ],
            )
            db.commit()
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    span = {"first": t0, "last": t0 + timedelta(hours=8 * per_instrument)}
    return name, url, {"tokens": tokens, "span": span}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, threads: int, workers: int, log: Path) -> subprocess.Popen:
    """Serve the portal in its own process; its stderr goes to the file ``log``.

    Not to a pipe: nobody reads a pipe during the run, and once its 64 KiB buffer is
    full (waitress logs ``Task queue depth is N`` each time a request waits for a
    thread) the server's I/O thread blocks in ``write`` and every request stalls until
    the clients give up.
    """
    env = dict(os.environ, CRYOFAC_SECRET_KEY="benchmark-secret")
    cmd = [sys.executable, "-m", "cryofac.cli", "portal", "serve", "--database-url", url]
    cmd += ["--port", str(port), "--threads", str(threads), "--workers", str(workers)]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text(errors="replace")[-2000:]) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


def start_worker(url: str, smtp_port: int, log: Path) -> subprocess.Popen:
    """``cryofac portal worker`` delivering to the SMTP server on ``smtp_port``."""
    cmd = [sys.executable, "-m", "cryofac.cli", "portal", "worker", "--database-url", url]
    cmd += ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port), "--poll-s", "0.5"]
    cmd += ["--no-evaluate-alarms"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


class SmtpSink:
    """A local SMTP server (aiosmtpd's Sink handler) in a process of its own, so it takes
    no CPU from the clients' process."""

    def __init__(self) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(cmd + ["-c", "aiosmtpd.handlers.Sink"])
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the SMTP sink did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def outbox_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, count(*) FROM outbox_messages GROUP BY status")
        ).all()
    engine.dispose()
    return {status: n for status, n in rows}


def server_log_summary(log: Path) -> dict:
    """Lines the server wrote to stderr, and the deepest request queue waitress reported."""
    lines = log.read_text(errors="replace").splitlines()
    depths = [int(m.group(1)) for m in map(QUEUE_DEPTH.search, lines) if m]
    other = [line for line in lines if not QUEUE_DEPTH.search(line)]
    return {"lines": len(lines), "max_queue_depth": max(depths, default=0), "other": other[-10:]}


class Client:
    """One keep-alive connection with a session cookie (pages) and a bearer token (API)."""

    def __init__(
        self, port: int, username: str, token: str, project_id: int, timeout_s: float = 120.0
    ):
        self.username = username
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        self.token, self.project_id, self.cookie = token, project_id, ""
        self.cookies: dict[str, str] = {}
        status, body, headers = self.request("GET", "/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
        form = f"csrf_token={csrf}&username={username}&password={PASSWORD}"
        status, _, _ = self.request(
            "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 302, f"log-in failed for {username}: {status}"
        status, _, _ = self.request("GET", "/bookings/mine")  # the session cookie works
        assert status == 200, f"{username} is not logged in after the log-in form: {status}"

    def request(self, method: str, path: str, body: str | None = None, headers=None):
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            self.conn.close()  # the server closed an idle keep-alive connection: reconnect
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read().decode()
        # every cookie set (log-in sets the session and the known-device cookie)
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        return response.status, data, response.headers


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    name, url, world = build_database(args.postgres_url, args.bookings, args.clients, args.notices)
    port = free_port()
    server_log = Path(tempfile.mkdtemp(prefix="portal_latency_")) / "server.stderr"
    server = start_server(url, port, args.server_threads, args.server_workers, server_log)
    sink = SmtpSink() if args.worker else None
    worker = start_worker(url, sink.port, server_log.with_name("worker.log")) if sink else None
    try:
        span = world["span"]
        weeks = int((span["last"] - span["first"]).days // 7) - 1
        clients = [
            Client(port, username, token, pid, args.request_timeout_s)
            for username, (token, pid) in world["tokens"].items()
        ]
        kinds = ("calendar", "bookings_get", "bookings_post")
        results: dict[str, list[float]] = {kind: [] for kind in kinds}
        statuses: dict[str, dict[int, int]] = {kind: {} for kind in kinds}
        # every counted request: (seconds, kind, start in s after the clients began, client)
        timeline: list[tuple[float, str, float, str]] = []
        errors: list[dict] = []  # requests that got no answer (timeout, connection lost)
        lock = threading.Lock()
        t_start = time.perf_counter()
        count_from = t_start + args.warmup_s
        stop_at = count_from + args.seconds
        barrier = threading.Barrier(len(clients))

        def send(client: Client, kind: str, instrument: str, week0: datetime, slot: datetime):
            """One request of ``kind``: (status, seconds, when it started)."""
            if kind == "calendar":
                method, path, body = "GET", f"/calendar/{instrument}?week={week0.date()}", None
                headers = {}
            elif kind == "bookings_get":
                q = f"instrument_id={instrument}&start={week0.isoformat()}"
                q += f"&end={(week0 + timedelta(days=7)).isoformat()}"
                method, path, body = "GET", "/api/v1/bookings?" + q.replace("+", "%2B"), None
                headers = {"Authorization": f"Bearer {client.token}"}
            else:
                method, path = "POST", "/api/v1/bookings"
                body = json.dumps(
                    {
                        "instrument_id": "glacios1",
                        "project_id": client.project_id,
                        "start": slot.isoformat(),
                        "end": (slot + timedelta(hours=2)).isoformat(),
                    }
                )
                headers = {
                    "Authorization": f"Bearer {client.token}",
                    "Content-Type": "application/json",
                }
            t = time.perf_counter()
            status, _, _ = client.request(method, path, body, headers)
            return status, time.perf_counter() - t, t

        def loop(index: int, client: Client) -> None:
            rng = random.Random(index)
            future = span["last"] + timedelta(days=30 + 40 * index)
            barrier.wait()
            k = 0
            while time.perf_counter() < stop_at:
                instrument = rng.choice(INSTRUMENTS[:2])
                week0 = span["first"] + timedelta(weeks=rng.randrange(1, weeks))
                for kind in kinds:
                    slot = future + timedelta(hours=3 * k)
                    t = time.perf_counter()
                    try:
                        status, elapsed, t = send(client, kind, instrument, week0, slot)
                    except (OSError, http.client.HTTPException) as exc:  # e.g. no answer in time
                        with lock:
                            errors.append(
                                {
                                    "kind": kind,
                                    "client": client.username,
                                    "started_s": round(t - t_start, 2),
                                    "failed_after_s": round(time.perf_counter() - t, 2),
                                    "error": f"{exc.__class__.__name__}: {exc}",
                                }
                            )
                        return  # this client's connection is in an unknown state: stop it
                    k += kind == "bookings_post"
                    if t >= count_from:
                        with lock:
                            results[kind].append(elapsed)
                            statuses[kind][status] = statuses[kind].get(status, 0) + 1
                            timeline.append((elapsed, kind, t - t_start, client.username))
                    if args.think_ms:
                        time.sleep(rng.uniform(0.5, 1.5) * args.think_ms / 1000)

        threads = [threading.Thread(target=loop, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
        # the counted window: from the end of the warm-up to the last counted answer
        window = max((t + e for e, _, t, _ in timeline), default=args.warmup_s) - args.warmup_s
        if worker is not None:  # let the worker catch up, then count what it delivered
            deadline = time.time() + 60
            while outbox_counts(url).get("pending", 0) and time.time() < deadline:
                time.sleep(1)
        outbox = outbox_counts(url)
    finally:
        server.terminate()
        server.wait(10)
        if worker is not None:
            worker.terminate()
            worker.wait(10)
            sink.stop()
        admin = sa.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    summary = {
        "bookings": args.bookings,
        "clients": args.clients,
        "server_threads": args.server_threads,
        "server_workers": args.server_workers,
        "think_ms": args.think_ms,
        "seconds": round(wall - args.warmup_s, 1),
        "window_s": round(window, 1),
        "label": args.label,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}",
        "results": {},
        "slowest": [
            {"kind": kind, "ms": round(e * 1000, 1), "started_s": round(t, 2), "client": who}
            for e, kind, t, who in sorted(timeline, reverse=True)[: args.show_slowest]
        ],
        "errors": errors,
        "notices_before": args.notices,
        "outbox_after": outbox,
        "notices_sent_during_run": outbox.get("sent", 0) - args.notices if sink else None,
        "server_stderr": server_log_summary(server_log),
    }
    shutil.rmtree(server_log.parent, ignore_errors=True)
    for kind, values in results.items():
        ms = np.array(values or [np.nan]) * 1000
        summary["results"][kind] = {
            "requests": len(values),
            "statuses": statuses[kind],
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "max_ms": round(float(np.max(ms)), 1),
            "throughput_per_s": round(len(values) / max(window, 1e-9), 1),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--server-threads", type=int, default=16, help="per worker process")
    parser.add_argument(
        "--server-workers", type=int, default=1, help="processes (more than 1: gunicorn)"
    )
    parser.add_argument(
        "--notices", type=int, default=100_000, help="delivered outbox rows before the run"
    )
    parser.add_argument(
        "--no-worker",
        dest="worker",
        action="store_false",
        help="do not run cryofac portal worker (and its SMTP sink) during the load",
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="pause of each client between requests (0: closed loop, back to back)",
    )
    parser.add_argument(
        "--warmup-s", type=float, default=3.0, help="seconds of load not counted (start-up)"
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=120.0,
        help="a request with no answer by then is recorded as an error and its client stops",
    )
    parser.add_argument("--show-slowest", type=int, default=10, help="slowest requests kept")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--label", default="", help="a note stored with the results")
    args = parser.parse_args()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    print("\n| request | n | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | req/s | statuses |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in summary["results"].items():
        print(
            f"| {kind} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['max_ms']} | {r['throughput_per_s']} | {r['statuses']} |"
        )
    print(f"\nwall {summary['seconds']} s after the warm-up (window {summary['window_s']} s)")
    for row in summary["slowest"][:5]:
        print(
            f"slow: {row['kind']} {row['ms']} ms, started at {row['started_s']} s by {row['client']}"
        )
    log = summary["server_stderr"]
    print(f"server stderr: {log['lines']} lines, deepest queue {log['max_queue_depth']}")
    print(
        f"outbox: {summary['notices_before']} delivered notices before; after: "
        f"{summary['outbox_after']}; sent over SMTP during the run "
        f"{summary['notices_sent_during_run']}"
    )
    for row in summary["errors"]:
        print(f"error: {row}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
