"""instrument_env: batch-ingest throughput and gate-decision latency, on SQLite and PostgreSQL.

1. Ingest: simulated readings of every configured sensor (generated beforehand, not
   timed) go through ``instrument_env.ingest.ingest_readings`` — the path the HTTP API
   and the MQTT subscriber use — in batches of ``--batch`` with a commit per batch,
   into a fresh database. Reports readings/s for new readings and for a full resend
   (every reading a duplicate: the idempotent path).
2. Gate: a fresh database is bulk-loaded (COPY / executemany, not timed) with
   ``--days`` of 1 Hz readings for 20 channels of the Krios room (temperature ×2,
   humidity, AC and DC magnetic field, 15 vibration bands), all within limits; then
   ``evaluate_gate("krios1")`` at the end of the data is timed ``--repeat`` times
   (allowed case), and again after one out-of-limit temperature reading is added
   inside the settling window (refused case, exact evaluation with reasons).

    python benchmarks/env_ingest_gate.py --readings 200000 --days 1 7 --out benchmarks/results/env_ingest_gate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from instrument_env.db import make_engine, session_factory, upgrade
from instrument_env.gate import evaluate_gate
from instrument_env.ingest import ingest_readings
from instrument_env.limits import load_env_config
from instrument_env.models import to_us
from instrument_env.sim import VIB_BANDS, EnvSimulator

DEFAULT_PG = os.environ.get(
    "CRYOFAC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
END = datetime(2026, 6, 1, tzinfo=UTC)
CHANNELS = [
    # sensor, quantity, band, level, noise (1 sigma), unit
    ("krios-t1", "temperature", "", 20.0, 0.01, "°C"),
    ("krios-t1", "humidity", "", 45.0, 0.3, "%RH"),
    ("krios-t2", "temperature", "", 20.1, 0.01, "°C"),
    ("krios-mag", "magnetic_field_ac", "", 25.0, 1.0, "nT"),
    ("krios-mag", "magnetic_field_dc", "", 48.0, 0.003, "µT"),
] + [("krios-vib", "vibration", band, 1.0, 0.05, "µm/s") for band in VIB_BANDS[:15]]
assert len(CHANNELS) == 20


class Database:
    """A throw-away database: a SQLite file or a new PostgreSQL database."""

    def __init__(self, backend: str, pg_url: str):
        self.backend = backend
        if backend == "sqlite":
            self.dir = tempfile.TemporaryDirectory(prefix="env-bench-")
            self.url = f"sqlite:///{Path(self.dir.name) / 'bench.sqlite3'}"
        else:
            self.admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
            self.name = f"env_bench_{uuid.uuid4().hex[:10]}"
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
            self.url = (
                sa.engine.make_url(pg_url)
                .set(database=self.name)
                .render_as_string(hide_password=False)
            )
        self.engine = make_engine(self.url)
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        if self.backend == "sqlite":
            self.dir.cleanup()
        else:
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def bench_ingest(backend: str, pg_url: str, n_readings: int, batch: int, config) -> dict:
    sim = EnvSimulator(config, seed=0)
    readings: list[dict] = []
    start = END - timedelta(days=30)
    for chunk in sim.batches(start, END, step_s=600):
        readings.extend(chunk)
        if len(readings) >= n_readings:
            break
    readings = readings[:n_readings]
    db = Database(backend, pg_url)
    try:
        sessions = session_factory(db.engine)
        rates = {}
        for label in ("new", "resend"):
            t0 = time.perf_counter()
            accepted = 0
            with sessions() as session:
                for i in range(0, len(readings), batch):
                    result = ingest_readings(
                        session, readings[i : i + batch], source="bench", config=config, now=END
                    )
                    session.commit()
                    accepted += result.accepted
            seconds = time.perf_counter() - t0
            assert accepted == len(readings)
            rates[label] = {
                "readings": len(readings),
                "seconds": seconds,
                "per_s": len(readings) / seconds,
            }
        with db.engine.connect() as conn:
            stored = conn.execute(
                sa.text("select count(*) from env_readings where band <> 'max'")
            ).scalar()
        assert stored == len(readings), (stored, len(readings))
        return {"backend": backend, "batch": batch, **rates}
    finally:
        db.close()


def bulk_load(db: Database, days: float) -> int:
    """``days`` of 1 Hz readings for the 20 channels ending at END (all in limits)."""
    rng = np.random.default_rng(0)
    end_s = to_us(END) // 1_000_000
    seconds = int(days * 86400)
    total = 0
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        day = 86400
        for block_start in range(end_s - seconds, end_s, day):
            ts = np.arange(block_start, min(block_start + day, end_s), dtype=np.int64)
            for sensor, quantity, band, base, sigma, unit in CHANNELS:
                values = base + rng.normal(0, sigma, ts.size)
                rows = [
                    (sensor, quantity, int(t) * 1_000_000, band, float(v), unit, "bulk")
                    for t, v in zip(ts, values, strict=True)
                ]
                if db.backend == "sqlite":
                    cursor.executemany(
                        "INSERT INTO env_readings (sensor, quantity, ts_us, band, value, unit, source) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                else:
                    with cursor.copy(
                        "COPY env_readings (sensor, quantity, ts_us, band, value, unit, source) FROM STDIN"
                    ) as copy:
                        for row in rows:
                            copy.write_row(row)
                total += len(rows)
            # the derived per-time maximum over bands, as ingest_readings writes it
            vib_max = base_max = None
            for sensor, quantity, band, base, sigma, unit in CHANNELS:
                if band:
                    base_max = max(base_max or 0.0, base + 5 * sigma)
                    vib_max = (sensor, quantity, unit)
            rows = [
                (vib_max[0], vib_max[1], int(t) * 1_000_000, "max", base_max, vib_max[2], "bulk")
                for t in ts
            ]
            if db.backend == "sqlite":
                cursor.executemany(
                    "INSERT INTO env_readings (sensor, quantity, ts_us, band, value, unit, source) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            else:
                with cursor.copy(
                    "COPY env_readings (sensor, quantity, ts_us, band, value, unit, source) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
            total += len(rows)
            raw.commit()
        if db.backend == "postgresql":
            cursor.execute("ANALYZE env_readings")
            raw.commit()
    finally:
        raw.close()
    return total


def bench_gate(backend: str, pg_url: str, days: float, repeat: int, config) -> dict:
    db = Database(backend, pg_url)
    try:
        t0 = time.perf_counter()
        rows = bulk_load(db, days)
        load_s = time.perf_counter() - t0
        sessions = session_factory(db.engine)
        at = END - timedelta(seconds=1)
        out = {"backend": backend, "days": days, "rows": rows, "load_s": load_s}
        for case in ("allowed", "refused"):
            if case == "refused":
                with sessions() as session:
                    ingest_readings(
                        session,
                        [
                            {
                                "sensor": "krios-t1",
                                "quantity": "temperature",
                                "ts": (END - timedelta(minutes=30, milliseconds=500)).isoformat(),
                                "value": 23.0,
                                "unit": "°C",
                            }
                        ],
                        source="bench",
                        config=config,
                        now=END,
                    )
                    session.commit()
            times, cpu = [], []
            with sessions() as session:
                for i in range(repeat + 3):
                    t, c = time.perf_counter(), time.process_time()
                    decision = evaluate_gate(session, "krios1", at, config=config)
                    elapsed = (time.perf_counter() - t) * 1000
                    cpu_ms = (time.process_time() - c) * 1000
                    session.rollback()
                    if i >= 3:  # warm-up excluded
                        times.append(elapsed)
                        cpu.append(cpu_ms)
            assert decision.allowed == (case == "allowed"), decision.reasons
            out[case] = {
                "median_ms": statistics.median(times),
                "p95_ms": float(np.percentile(times, 95)),
                "max_ms": max(times),
                # CPU time of this process: for SQLite the whole decision (database
                # included), for PostgreSQL the client side only
                "cpu_median_ms": statistics.median(cpu),
                "reasons": decision.reasons,
            }
        return out
    finally:
        db.close()


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sa.__version__,
        "load_average_at_start": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--days", type=float, nargs="+", default=[1.0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-gate", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = load_env_config()
    backends = args.backend or ["sqlite", "postgresql"]
    results = {"machine": machine(), "ingest": [], "gate": []}
    if args.backend is None or "postgresql" in backends:
        with sa.create_engine(args.pg_url).connect() as conn:
            results["machine"]["postgresql"] = conn.execute(sa.text("show server_version")).scalar()
    for backend in backends:
        if not args.skip_ingest:
            r = bench_ingest(backend, args.pg_url, args.readings, args.batch, config)
            results["ingest"].append(r)
            print(
                f"ingest {backend:<10} {r['new']['readings']} readings: "
                f"{r['new']['per_s']:,.0f}/s new, {r['resend']['per_s']:,.0f}/s resend "
                f"(batches of {args.batch}; load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        if not args.skip_gate:
            for days in args.days:
                r = bench_gate(backend, args.pg_url, days, args.repeat, config)
                results["gate"].append(r)
                print(
                    f"gate   {backend:<10} {days:g} d x 20 ch @ 1 Hz ({r['rows']:,} rows, "
                    f"loaded in {r['load_s']:.0f} s): allowed median {r['allowed']['median_ms']:.1f} ms "
                    f"(p95 {r['allowed']['p95_ms']:.1f}, cpu {r['allowed']['cpu_median_ms']:.1f}), "
                    f"refused median {r['refused']['median_ms']:.1f} ms "
                    f"(p95 {r['refused']['p95_ms']:.1f}, cpu {r['refused']['cpu_median_ms']:.1f}); "
                    f"load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
