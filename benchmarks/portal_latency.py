"""Portal latency under load: the week calendar page and the bookings API on PostgreSQL.

Builds a throw-away PostgreSQL database with the facility, 10,000 bookings (by default)
spread over the four instruments, serves the portal in a separate process
(``cryofac portal serve``, waitress), and runs N concurrent clients (threads, each with
its own keep-alive connection, logged in through the real log-in form or holding a
bearer token). Each client loops over three requests:

* ``GET /calendar/<instrument>?week=<a random week with bookings>`` (HTML page, cookie)
* ``GET /api/v1/bookings?instrument_id=&start=&end=`` (one week, bearer token)
* ``POST /api/v1/bookings`` (a free slot; every rule checked, 201 expected)

and records the wall-clock latency of each. Prints p50/p95/p99 per request kind and
writes them as JSON (``--out``).

    python benchmarks/portal_latency.py --clients 50 --bookings 10000 --seconds 30
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
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


def build_database(server_url: str, n_bookings: int, n_clients: int) -> tuple[str, str, dict]:
    """A fresh database with the facility, users, projects and ``n_bookings`` bookings."""
    from cryofac.config import load_facility
    from portal import db as portal_db
    from portal.domain import accounts, projects
    from portal.domain.facility import load_facility_into_db
    from portal.models import Booking, Project, User

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
        load_facility_into_db(db, load_facility())
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
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    span = {"first": t0, "last": t0 + timedelta(hours=8 * per_instrument)}
    return name, url, {"tokens": tokens, "span": span}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, threads: int, workers: int = 1) -> subprocess.Popen:
    env = dict(os.environ, CRYOFAC_SECRET_KEY="benchmark-secret")
    cmd = [sys.executable, "-m", "cryofac.cli", "portal", "serve", "--database-url", url]
    cmd += ["--port", str(port), "--threads", str(threads), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:]) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


class Client:
    """One keep-alive connection with a session cookie (pages) and a bearer token (API)."""

    def __init__(self, port: int, username: str, token: str, project_id: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token, self.project_id, self.cookie = token, project_id, ""
        status, body, headers = self.request("GET", "/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
        form = f"csrf_token={csrf}&username={username}&password={PASSWORD}"
        status, _, _ = self.request(
            "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 302, f"log-in failed for {username}: {status}"

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
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, data, response.headers


def run(args: argparse.Namespace) -> dict:
    name, url, world = build_database(args.postgres_url, args.bookings, args.clients)
    port = free_port()
    server = start_server(url, port, args.server_threads, args.server_workers)
    try:
        span = world["span"]
        weeks = int((span["last"] - span["first"]).days // 7) - 1
        clients = [
            Client(port, username, token, pid) for username, (token, pid) in world["tokens"].items()
        ]
        results: dict[str, list[float]] = {"calendar": [], "bookings_get": [], "bookings_post": []}
        statuses: dict[str, dict[int, int]] = {k: {} for k in results}
        lock = threading.Lock()
        count_from = time.perf_counter() + args.warmup_s
        stop_at = count_from + args.seconds
        barrier = threading.Barrier(len(clients))

        def loop(index: int, client: Client) -> None:
            rng = random.Random(index)
            future = span["last"] + timedelta(days=30 + 40 * index)
            barrier.wait()
            k = 0
            while time.perf_counter() < stop_at:
                instrument = rng.choice(INSTRUMENTS[:2])
                week0 = span["first"] + timedelta(weeks=rng.randrange(1, weeks))
                for kind in ("calendar", "bookings_get", "bookings_post"):
                    if kind == "calendar":
                        path = f"/calendar/{instrument}?week={week0.date().isoformat()}"
                        t = time.perf_counter()
                        status, _, _ = client.request("GET", path)
                    elif kind == "bookings_get":
                        q = f"instrument_id={instrument}&start={week0.isoformat()}"
                        q += f"&end={(week0 + timedelta(days=7)).isoformat()}"
                        q = q.replace("+", "%2B")
                        auth = {"Authorization": f"Bearer {client.token}"}
                        t = time.perf_counter()
                        status, _, _ = client.request("GET", f"/api/v1/bookings?{q}", None, auth)
                    else:
                        start = future + timedelta(hours=3 * k)
                        body = json.dumps(
                            {
                                "instrument_id": "glacios1",
                                "project_id": client.project_id,
                                "start": start.isoformat(),
                                "end": (start + timedelta(hours=2)).isoformat(),
                            }
                        )
                        headers = {
                            "Authorization": f"Bearer {client.token}",
                            "Content-Type": "application/json",
                        }
                        t = time.perf_counter()
                        status, _, _ = client.request("POST", "/api/v1/bookings", body, headers)
                        k += 1
                    elapsed = time.perf_counter() - t
                    if args.think_ms:
                        time.sleep(rng.uniform(0.5, 1.5) * args.think_ms / 1000)
                    if t < count_from:
                        continue
                    with lock:
                        results[kind].append(elapsed)
                        statuses[kind][status] = statuses[kind].get(status, 0) + 1

        threads = [threading.Thread(target=loop, args=(i, c)) for i, c in enumerate(clients)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
    finally:
        server.terminate()
        server.wait(10)
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
        "label": args.label,
        "load_average_after": os.getloadavg(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}",
        "results": {},
    }
    for kind, values in results.items():
        ms = np.array(values) * 1000
        summary["results"][kind] = {
            "requests": int(ms.size),
            "statuses": statuses[kind],
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "throughput_per_s": round(ms.size / (wall - args.warmup_s), 1),
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
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--label", default="", help="a note stored with the results")
    args = parser.parse_args()
    summary = run(args)
    print(json.dumps(summary, indent=2))
    print("\n| request | n | p50 (ms) | p95 (ms) | p99 (ms) | req/s | statuses |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in summary["results"].items():
        print(
            f"| {kind} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['throughput_per_s']} | {r['statuses']} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
