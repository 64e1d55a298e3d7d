"""instrument_env: HTTP ingest rate through the portal (``POST /api/v1/env/readings``).

Everything real: a fresh PostgreSQL database (created and dropped), the portal served
by ``cryofac portal serve`` (waitress) in its own process, a technician's bearer token,
and ``--clients`` client threads posting ``--readings`` distinct, plausible readings
(temperature, humidity, magnetic field of the Krios room over the last hours, generated
beforehand, not timed) as JSON arrays of ``--per-request`` readings (a logger's batch).

Reported: readings/s from the first request to the last answer, request latency
(median, p95), readings accepted by the answers and rows found in the database
(**lost** = sent − stored, must be 0), and the load averages before and after.

    python benchmarks/env_http_ingest.py --readings 200000 --per-request 5000 --clients 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from portal_latency import DEFAULT_PG, free_port, start_server  # noqa: E402

CHANNELS = [
    ("krios-t1", "temperature", 20.0, "°C"),
    ("krios-t1", "humidity", 40.0, "%RH"),
    ("krios-t2", "temperature", 20.0, "°C"),
    ("krios-mag", "magnetic_field_dc", 50.0, "µT"),
]


def make_requests(readings: int, per_request: int) -> list[bytes]:
    """JSON bodies of ``per_request`` readings each, channel by channel, 0.01 s apart."""
    per_channel = -(-readings // len(CHANNELS))
    start = datetime.now(UTC) - timedelta(hours=20)
    rng = np.random.default_rng(1)
    items = []
    for sensor, quantity, level, unit in CHANNELS:
        values = level + rng.normal(0, 0.05, per_channel)
        for k in range(per_channel):
            if len(items) == readings:
                break
            ts = (start + timedelta(seconds=k / 100)).isoformat()
            items.append(
                {
                    "sensor": sensor,
                    "quantity": quantity,
                    "ts": ts,
                    "value": round(float(values[k]), 4),
                    "unit": unit,
                }
            )
    return [
        json.dumps(items[i : i + per_request]).encode() for i in range(0, len(items), per_request)
    ]


def post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def run(args) -> dict:
    from instrument_env.db import upgrade as env_upgrade
    from portal import db as portal_db
    from portal.domain import accounts

    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    name = f"env_http_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
    server = None
    try:
        portal_db.upgrade(url)
        env_upgrade(url)
        engine = portal_db.make_engine(url)
        with portal_db.session_factory(engine)() as db:
            hasher = accounts.password_hasher(1, 256)
            accounts.create_user(db, hasher, "tech", "benchmark-password", "technician")
            db.commit()
        bodies = make_requests(args.readings, args.per_request)
        port = free_port()
        log = Path(tempfile.mkdtemp(prefix="env_http_")) / "server.stderr"
        server = start_server(url, port, args.server_threads, 1, log)
        status, token = post(
            port,
            "/api/v1/tokens",
            json.dumps({"username": "tech", "password": "benchmark-password"}).encode(),
            {},
        )
        assert status == 201, token
        headers = {"Authorization": f"Bearer {token['token']}"}
        queue = list(enumerate(bodies))
        lock = threading.Lock()
        latencies, accepted, failures = [], [0], []

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop(0)
                began = time.perf_counter()
                status, answer = post(port, "/api/v1/env/readings", body, headers)
                with lock:
                    latencies.append(time.perf_counter() - began)
                    if status == 202:
                        accepted[0] += answer["accepted"]
                    else:
                        failures.append((status, str(answer)[:200]))

        load_before = os.getloadavg()
        began = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        load_after = os.getloadavg()
        with engine.connect() as conn:
            stored = conn.execute(sa.text("select count(*) from env_readings")).scalar()
        engine.dispose()
        return {
            "readings": args.readings,
            "per_request": args.per_request,
            "clients": args.clients,
            "server_threads": args.server_threads,
            "elapsed_s": round(elapsed, 2),
            "readings_per_s": round(args.readings / elapsed),
            "request_median_ms": round(1000 * float(np.median(latencies)), 1),
            "request_p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1),
            "accepted": accepted[0],
            "stored": int(stored),
            "lost": args.readings - int(stored),
            "failures": failures[:5],
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "machine": {
                "cpu": platform.machine(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
            },
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--per-request", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--server-threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="append the result (JSON lines)")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=1))
    if args.out:
        with args.out.open("a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
