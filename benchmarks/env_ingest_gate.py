"""instrument_env: batch-ingest throughput and gate-decision latency, on SQLite and PostgreSQL.

1. Ingest: simulated readings of every configured sensor (generated beforehand, not
   timed) go through ``instrument_env.ingest.ingest_readings`` — the path the HTTP API
   and the MQTT subscriber use — in batches of ``--batch`` with a commit per batch,
   into a fresh database. Reports readings/s for new readings and for a full resend
   (every reading a duplicate: the idempotent path).
2. Gate: a fresh database is bulk-loaded (timed separately, not part of the gate
   figures) with ``--days`` of 1 Hz readings for 25 channels of the Krios room
   (temperature ×2, humidity, AC and DC magnetic field, the 20 vibration bands that
   limits.yaml names — the gate judges each band's coverage — plus the derived per-time
   ``max`` vibration band: 25 channels), all within limits; then
   ``evaluate_gate("krios1")`` at the end of the data is timed ``--repeat`` times
   (allowed case), and again after one out-of-limit temperature reading is added
   inside the settling window (refused case, exact evaluation with reasons).

   ``--loader sql`` (default) generates the rows inside the database, channel by
   channel in primary-key order (SQLite: a recursive CTE with the journal off during
   the load; PostgreSQL: ``generate_series``), with a deterministic pseudo-noise of
   the timestamp (a Weyl sequence, uniform, standard deviation = the channel's sigma,
   bounded to ±1.73 sigma so the data are always in limits). ``--loader numpy`` is the
   original path (Gaussian noise, executemany / COPY from Python), fine for a few days.

   A long span is built once and reused: ``--keep-db PATH`` (SQLite file) or
   ``--pg-keep-db NAME`` (PostgreSQL database) keeps the built database,
   ``--reuse-db PATH`` / ``--pg-reuse-db NAME`` times an existing one without loading.
   Before each timed phase the 1-min load average is checked; above ``--max-load``
   the script waits a minute and retries (up to ``--max-wait-s``), and records the
   load averages before and after every phase.

    python benchmarks/env_ingest_gate.py --readings 200000 --days 1 7 --out benchmarks/results/env_ingest_gate.json
    python benchmarks/env_ingest_gate.py --backend sqlite --skip-ingest --days 365 \\
        --keep-db /work/bench-data/env_year.sqlite3 --out benchmarks/results/env_gate_year.json
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
from instrument_env.ingest import band_times_sql, ingest_readings
from instrument_env.limits import load_env_config
from instrument_env.models import BAND_SEPARATOR, to_us
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
] + [("krios-vib", "vibration", band, 1.0, 0.05, "µm/s") for band in VIB_BANDS]
assert len(CHANNELS) == 25


class Database:
    """A benchmark database: a SQLite file or a PostgreSQL database.

    By default a throw-away one (a temporary file, a new database dropped on close).
    ``keep``: a SQLite path or PostgreSQL database name that is created and kept;
    ``reuse``: an existing one, opened as it is (no migration, no load, not dropped).
    """

    def __init__(
        self, backend: str, pg_url: str, *, keep: str | None = None, reuse: str | None = None
    ):
        self.backend = backend
        self.reused = reuse is not None
        self.kept = keep is not None or reuse is not None
        target = reuse or keep
        if backend == "sqlite":
            if target is None:
                self.dir = tempfile.TemporaryDirectory(prefix="env-bench-")
                self.path = Path(self.dir.name) / "bench.sqlite3"
            else:
                self.path = Path(target)
                if reuse is None and self.path.exists():
                    raise SystemExit(f"{self.path}: exists; pass --reuse-db to time it as it is")
                if reuse is not None and not self.path.exists():
                    raise SystemExit(f"{self.path}: no such database to reuse")
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.url = f"sqlite:///{self.path}"
        else:
            self.admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
            self.name = target or f"env_bench_{uuid.uuid4().hex[:10]}"
            if reuse is None:
                with self.admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
            self.url = (
                sa.engine.make_url(pg_url)
                .set(database=self.name)
                .render_as_string(hide_password=False)
            )
        self.engine = make_engine(self.url)
        if reuse is None:
            upgrade(self.engine)

    def size_bytes(self) -> int:
        """Size on disk: the SQLite file (with its WAL) or ``pg_database_size``."""
        if self.backend == "sqlite":
            return sum(
                p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()
            )
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.text("select pg_database_size(current_database())")).scalar()
            )

    def close(self) -> None:
        self.engine.dispose()
        if self.kept:
            return
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


def _vibration_max() -> tuple[tuple[str, str, str], float]:
    """The derived ``max`` band row's channel and value, as both loaders write it."""
    vib_max = base_max = None
    for sensor, quantity, band, base, sigma, unit in CHANNELS:
        if band:
            base_max = max(base_max or 0.0, base + 5 * sigma)
            vib_max = (sensor, quantity, unit)
    return vib_max, base_max


_COLUMNS = "env_readings (sensor, quantity, ts_us, band, value, unit, source)"


def _write_rows(backend: str, cursor, rows: list[tuple]) -> int:
    """Bulk-insert ``rows`` (executemany on SQLite, COPY on PostgreSQL); their count."""
    if backend == "sqlite":
        cursor.executemany(f"INSERT INTO {_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    else:
        with cursor.copy(f"COPY {_COLUMNS} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    return len(rows)


def bulk_load_numpy(db: Database, days: float) -> int:
    """``days`` of 1 Hz readings for the 25 channels ending at END (all in limits),
    Gaussian noise generated in Python and sent with executemany / COPY."""
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
                total += _write_rows(db.backend, cursor, rows)
            # the derived per-time maximum over bands, as ingest_readings writes it
            # (a constant bound on every band: base + 5 sigma)
            vib_max, base_max = _vibration_max()
            rows = [
                (vib_max[0], vib_max[1], int(t) * 1_000_000, "max", base_max, vib_max[2], "bulk")
                for t in ts
            ]
            total += _write_rows(db.backend, cursor, rows)
            raw.commit()
        if db.backend == "postgresql":
            cursor.execute("ANALYZE env_readings")
            raw.commit()
    finally:
        raw.close()
    return total


#: Weyl-sequence pseudo-noise of the timestamp s (integer seconds): frac(s * k / 2^32)
#: with k = 2654435761 (Knuth's multiplicative constant), shifted per channel by a salt.
#: Exact integer arithmetic on both backends (s * k < 2^63 until the year 2080).
WEYL_K = 2654435761
WEYL_M = 4294967296
WEYL_SALT = 1640531527  # 2^32 (1 - 1/phi): channel offsets spread over [0, 2^32)
NOISE_SPAN = 12**0.5  # a uniform variable on [-span/2, span/2] * sigma has std sigma


def _channel_groups() -> list[tuple[str, str, list[tuple[str, float, float, int, str]]]]:
    """The channels as (sensor, quantity, [(band, base, noise span, salt, unit)]) in
    primary-key order, the vibration group with its derived ``max`` band."""
    (vib_sensor, vib_quantity, vib_unit), base_max = _vibration_max()
    groups: dict[tuple[str, str], list] = {}
    for index, (sensor, quantity, band, base, sigma, unit) in enumerate(CHANNELS):
        groups.setdefault((sensor, quantity), []).append(
            (band, base, sigma * NOISE_SPAN, (index + 1) * WEYL_SALT % WEYL_M, unit)
        )
    groups[(vib_sensor, vib_quantity)].append(("max", base_max, 0.0, 0, vib_unit))
    return [(s, q, sorted(bands)) for (s, q), bands in sorted(groups.items())]


def bulk_load_sql(db: Database, days: float, chunk_days: float = 30.0) -> int:
    """``days`` of 1 Hz readings for the 25 channels ending at END (all in limits),
    generated inside the database channel group by channel group in key order.

    Every row's value is ``base + span * (frac((s * K + salt) / 2^32) - 0.5)``; the
    vibration ``max`` band has span 0 (the constant bound the numpy loader writes).
    """
    end_s = to_us(END) // 1_000_000
    start_s = end_s - int(days * 86400)
    chunk_s = int(chunk_days * 86400)
    total = 0
    if db.backend == "sqlite":
        import sqlite3

        db.engine.dispose()
        conn = sqlite3.connect(db.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
            for sensor, quantity, bands in _channel_groups():
                values = ", ".join("(?, ?, ?, ?, ?)" for _ in bands)
                statement = (
                    "WITH RECURSIVE t(s) AS (SELECT ? UNION ALL SELECT s + 1 FROM t WHERE s + 1 < ?), "
                    f"b(band, base, span, salt, unit) AS (VALUES {values}) "
                    "INSERT INTO env_readings (sensor, quantity, ts_us, band, value, unit, source) "
                    "SELECT ?, ?, s * 1000000, b.band, "
                    f"b.base + b.span * (((s * {WEYL_K} + b.salt) % {WEYL_M}) / {WEYL_M}.0 - 0.5), "
                    "b.unit, 'bulk' FROM t CROSS JOIN b"
                )
                flat = [x for band in bands for x in band]
                for t0 in range(start_s, end_s, chunk_s):
                    t1 = min(t0 + chunk_s, end_s)
                    conn.execute("BEGIN")
                    conn.execute(statement, [t0, t1, *flat, sensor, quantity])
                    conn.execute("COMMIT")
                    total += (t1 - t0) * len(bands)
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        return total
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET synchronous_commit = off")
        for sensor, quantity, bands in _channel_groups():
            values = ", ".join(
                "(%s::text, %s::float8, %s::float8, %s::bigint, %s::text)" for _ in bands
            )
            statement = (
                "INSERT INTO env_readings (sensor, quantity, ts_us, band, value, unit, source) "
                "SELECT %s, %s, s * 1000000, b.band, "
                f"b.base + b.span * (((s * {WEYL_K} + b.salt) %% {WEYL_M})::float8 / {WEYL_M}.0 - 0.5), "
                "b.unit, 'bulk' "
                "FROM generate_series(%s::bigint, %s::bigint - 1) AS s "
                f"CROSS JOIN (VALUES {values}) AS b(band, base, span, salt, unit)"
            )
            flat = [x for band in bands for x in band]
            for t0 in range(start_s, end_s, chunk_s):
                t1 = min(t0 + chunk_s, end_s)
                cursor.execute(statement, [sensor, quantity, t0, t1, *flat])
                raw.commit()
                total += (t1 - t0) * len(bands)
        cursor.execute("ANALYZE env_readings")
        raw.commit()
    finally:
        raw.close()
    return total


#: The out-of-limit reading of the refused case (between two bulk rows: no collision).
REFUSED_TS = END - timedelta(minutes=30, milliseconds=500)


def _remove_refused_reading(db: Database) -> None:
    """Undo the refused case (a kept database is timed again later), by primary key."""
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM env_readings WHERE sensor = 'krios-t1' AND quantity = 'temperature' "
                "AND ts_us = :ts AND band = ''"
            ),
            {"ts": to_us(REFUSED_TS)},
        )
        conn.execute(sa.text("DELETE FROM env_rollup_dirty"))


def _load_averages() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed_decisions(
    sessions, at: datetime, config, repeat: int, max_load: float, max_wait_s: float
) -> dict:
    """``repeat`` timed decisions after 3 warm-up ones, on a quiet machine if possible.

    Waits (60 s steps) while the 1-min load average exceeds ``max_load`` before the
    phase, and re-runs the phase when it exceeded it afterwards, for at most
    ``max_wait_s`` in all; the figures of the last attempt are kept with its loads.
    """
    waited = 0.0
    attempts = 0
    while True:
        before = _load_averages()
        if before[0] > max_load and waited < max_wait_s:
            print(f"  load average {before[0]:.2f} > {max_load}: waiting 60 s", flush=True)
            time.sleep(60)
            waited += 60
            continue
        attempts += 1
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
        after = _load_averages()
        if max(before[0], after[0]) <= max_load or waited >= max_wait_s:
            break
        print(f"  load average {after[0]:.2f} > {max_load} after the phase: retrying", flush=True)
        time.sleep(60)
        waited += 60
    return {
        "decision": decision,
        "median_ms": statistics.median(times),
        "p95_ms": float(np.percentile(times, 95)),
        "max_ms": max(times),
        # CPU time of this process: for SQLite the whole decision (database
        # included), for PostgreSQL the client side only
        "cpu_median_ms": statistics.median(cpu),
        "cpu_p95_ms": float(np.percentile(cpu, 95)),
        "load_average_before": before,
        "load_average_after": after,
        "attempts": attempts,
        "waited_s": waited,
    }


def bench_gate(
    backend: str,
    pg_url: str,
    days: float,
    repeat: int,
    config,
    *,
    loader: str = "sql",
    keep: str | None = None,
    reuse: str | None = None,
    max_load: float = 1.5,
    max_wait_s: float = 900.0,
) -> dict:
    db = Database(backend, pg_url, keep=keep, reuse=reuse)
    try:
        out = {"backend": backend, "days": days, "loader": None if reuse else loader}
        if reuse:
            _remove_refused_reading(db)  # left behind by an interrupted run
            with db.engine.connect() as conn:
                rows = conn.execute(sa.text("select count(*) from env_readings")).scalar()
            out.update(rows=rows, load_s=None, reused=reuse)
        else:
            out["load_average_before_load"] = _load_averages()
            t0 = time.perf_counter()
            rows = (bulk_load_sql if loader == "sql" else bulk_load_numpy)(db, days)
            with db.engine.begin() as conn:  # the band labels per time, as ingest keeps them
                sql = band_times_sql(db.backend, span=False)
                conn.execute(sa.text(sql), {"sep": BAND_SEPARATOR})
            out.update(rows=rows, load_s=time.perf_counter() - t0)
            out["load_average_after_load"] = _load_averages()
            print(f"  loaded {rows:,} rows in {out['load_s']:.0f} s", flush=True)
            if keep:
                out["kept"] = keep
        out["size_bytes"] = db.size_bytes()
        sessions = session_factory(db.engine)
        at = END - timedelta(seconds=1)
        try:
            for case in ("allowed", "refused"):
                if case == "refused":
                    with sessions() as session:
                        ingest_readings(
                            session,
                            [
                                {
                                    "sensor": "krios-t1",
                                    "quantity": "temperature",
                                    "ts": REFUSED_TS.isoformat(),
                                    "value": 23.0,
                                    "unit": "°C",
                                }
                            ],
                            source="bench",
                            config=config,
                            now=END,
                        )
                        session.commit()
                timed = _timed_decisions(sessions, at, config, repeat, max_load, max_wait_s)
                decision = timed.pop("decision")
                assert decision.allowed == (case == "allowed"), decision.reasons
                out[case] = {**timed, "reasons": decision.reasons}
        finally:
            if db.kept:
                _remove_refused_reading(db)
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
    parser.add_argument("--loader", choices=["sql", "numpy"], default="sql")
    parser.add_argument("--keep-db", metavar="PATH", help="SQLite: build into PATH and keep it")
    parser.add_argument("--reuse-db", metavar="PATH", help="SQLite: time the database at PATH")
    parser.add_argument("--pg-keep-db", metavar="NAME", help="PostgreSQL: build NAME, keep it")
    parser.add_argument("--pg-reuse-db", metavar="NAME", help="PostgreSQL: time database NAME")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--max-wait-s", type=float, default=900.0)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-gate", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if (args.keep_db and args.reuse_db) or (args.pg_keep_db and args.pg_reuse_db):
        parser.error(
            "pass either --keep-db or --reuse-db (and either --pg-keep-db or --pg-reuse-db)"
        )
    if any((args.keep_db, args.reuse_db, args.pg_keep_db, args.pg_reuse_db)) and len(args.days) > 1:
        parser.error("a kept or reused database holds one span: pass a single --days")
    config = load_env_config()
    backends = args.backend or ["sqlite", "postgresql"]
    results = {"machine": machine(), "ingest": [], "gate": []}
    if args.backend is None or "postgresql" in backends:
        with sa.create_engine(args.pg_url).connect() as conn:
            results["machine"]["postgresql"] = conn.execute(sa.text("show server_version")).scalar()

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")

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
            save()
        if not args.skip_gate:
            keep, reuse = (
                (args.keep_db, args.reuse_db)
                if backend == "sqlite"
                else (args.pg_keep_db, args.pg_reuse_db)
            )
            for days in args.days:
                r = bench_gate(
                    backend,
                    args.pg_url,
                    days,
                    args.repeat,
                    config,
                    loader=args.loader,
                    keep=keep,
                    reuse=reuse,
                    max_load=args.max_load,
                    max_wait_s=args.max_wait_s,
                )
                results["gate"].append(r)
                loaded = "reused" if r["load_s"] is None else f"loaded in {r['load_s']:.0f} s"
                allowed, refused = r["allowed"], r["refused"]
                print(
                    f"gate   {backend:<10} {days:g} d x {len(CHANNELS)} ch @ 1 Hz ({r['rows']:,} rows, "
                    f"{r['size_bytes'] / 2**30:.2f} GiB, {loaded}): "
                    f"allowed median {allowed['median_ms']:.1f} ms "
                    f"(p95 {allowed['p95_ms']:.1f}, cpu {allowed['cpu_median_ms']:.1f}/"
                    f"{allowed['cpu_p95_ms']:.1f}; load {allowed['load_average_before'][0]:.2f}"
                    f"->{allowed['load_average_after'][0]:.2f}), "
                    f"refused median {refused['median_ms']:.1f} ms "
                    f"(p95 {refused['p95_ms']:.1f}, cpu {refused['cpu_median_ms']:.1f}/"
                    f"{refused['cpu_p95_ms']:.1f}; load {refused['load_average_before'][0]:.2f}"
                    f"->{refused['load_average_after'][0]:.2f})",
                    flush=True,
                )
                save()
    save()


if __name__ == "__main__":
    main()
