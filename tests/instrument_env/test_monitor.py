"""The alarm monitor service: evaluates whatever the ingest path, survives faults."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from instrument_env.alarms import list_alarms
from instrument_env.db import make_engine, session_factory, upgrade
from instrument_env.monitor import MonitorOptions, run_monitor


def test_monitor_survives_a_database_without_tables_then_evaluates(tmp_path):
    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    engine = make_engine(url)
    sessions = session_factory(engine)
    events: list[str] = []
    stats = run_monitor(
        sessions, MonitorOptions(every_s=0.01), duration_s=0, on_event=events.append
    )
    assert stats.cycles == 1 and stats.failures == 1
    assert events[0].startswith("evaluation failed: OperationalError: no such table")
    upgrade(engine)  # the database comes back: the next cycle evaluates
    stop = threading.Event()
    stats = run_monitor(
        sessions, MonitorOptions(every_s=0.01), stop=stop, duration_s=0, on_event=events.append
    )
    assert stats.failures == 0 and stats.changed > 0
    with sessions() as session:
        stale = [a for a in list_alarms(session, "firing") if a.kind == "stale"]
    assert {a.sensor for a in stale} >= {"krios-t1", "krios-vib"}
    engine.dispose()


def test_monitor_command_evaluates_readings_ingested_over_any_path(tmp_path):
    from cryofac.cli import main as cryofac_main  # noqa: F401 - the entry point exists
    from instrument_env.cli import env_group
    from instrument_env.ingest import ingest_readings

    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    now = datetime.now(UTC)
    hot = [
        {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "band": "8",
            "ts": (now - timedelta(seconds=10 * k)).isoformat(),
            "value": 40.0,
            "unit": "µm/s",
        }
        for k in range(30)
    ]
    with session_factory(engine)() as session:  # as the CSV import or HTTP API store them
        assert ingest_readings(session, hot, source="csv", now=now).accepted == 30
        session.commit()
    result = CliRunner().invoke(
        env_group, ["--db", url, "monitor", "--every", "1", "--duration", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "1 evaluations, 0 failed" in result.output
    with session_factory(engine)() as session:
        vib = [a for a in list_alarms(session) if a.rule_id == "krios-vibration"]
    assert len(vib) == 1 and vib[0].state == "firing" and vib[0].severity == "critical"
    engine.dispose()


def test_sigterm_stops_a_monitor_blocked_on_a_locked_database(tmp_path):
    """Fault injection: another process holds the database's write lock, so the monitor's
    cycle waits on SQLite's 30 s busy timeout; SIGTERM (what a dying parent sends) must
    stop it within the grace period, not when the database answers."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from instrument_env.cli import STOP_GRACE_S

    db = tmp_path / "env.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    engine.dispose()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # held until the end of the test
    log = tmp_path / "monitor.log"
    with open(log, "w") as out:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "cryofac.cli", "env", "--db", f"sqlite:///{db}"]
            + ["monitor", "--every", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "SIGTERM stops" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # inside its first cycle, waiting for the lock
        assert monitor.poll() is None
        monitor.send_signal(signal.SIGTERM)
        code = monitor.wait(timeout=STOP_GRACE_S + 10)  # the busy timeout is 30 s
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()
        holder.rollback()
        holder.close()
    assert code == -signal.SIGALRM, log.read_text()  # cut off, not finished
