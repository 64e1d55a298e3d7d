"""The demo's room environment: a simulated history, then a live feed over HTTP.

``replay_history`` writes hours of simulated sensor readings (with an
air-conditioning fault part-way through) straight into the database and advances
the alarm state machine along the way, as the MQTT subscriber and the alarm
evaluator would have done in real time. ``LiveFeed`` then keeps the rooms'
sensors reporting in real time through the portal's readings API, so the gate,
the technician view and the session's provenance see fresh data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryofac.demo.client import PortalClient


def replay_history(
    sessionmaker: Callable,
    start: datetime,
    end: datetime,
    faults: list,
    *,
    seed: int = 0,
    evaluate_every_s: float = 60.0,
    on_progress: Callable[[float], None] | None = None,
) -> int:
    """Ingest simulated readings for ``[start, end)``; returns how many were stored.

    Alarms are evaluated every ``evaluate_every_s`` of simulated time.
    """
    from instrument_env import alarms
    from instrument_env.ingest import ingest_readings
    from instrument_env.sim import EnvSimulator

    simulator = EnvSimulator(seed=seed)
    stored = 0
    total_s = (end - start).total_seconds()
    for batch in simulator.batches(start, end, faults, step_s=evaluate_every_s):
        if not batch:
            continue
        at = datetime.fromisoformat(batch[-1]["ts"])
        with sessionmaker() as db:
            result = ingest_readings(db, batch, source="demo-history", now=end)
            alarms.evaluate(db, at)
            db.commit()
        stored += result.accepted
        if on_progress is not None:
            on_progress(min(1.0, (at - start).total_seconds() / total_s))
    return stored


class LiveFeed(threading.Thread):
    """Post simulated readings for every sensor to ``/api/v1/env/readings`` in real time.

    Each ``period_s`` it sends the readings due since the last post (technician
    token), then advances the alarms. ``faults`` may be changed while it runs.
    """

    def __init__(
        self,
        client: PortalClient,
        token: str,
        sessionmaker: Callable,
        since: datetime,
        *,
        period_s: float = 10.0,
        seed: int = 1,
    ):
        super().__init__(name="cryofac-demo-env", daemon=True)
        from instrument_env.sim import EnvSimulator

        self.client = client
        self.token = token
        self.sessionmaker = sessionmaker
        self.period_s = period_s
        self.last = since
        self.faults: list = []
        self.posted = 0
        self.rejected = 0
        self.errors: list[str] = []
        self._simulator = EnvSimulator(seed=seed)
        self._halt = threading.Event()
        #: advance the alarms after each post; off once ``cryofac env monitor`` runs
        #: (one evaluator, no two writers racing to open the same alarm)
        self.evaluate = True

    def step(self, now: datetime | None = None) -> None:
        """Send what is due up to ``now``; safe to call directly (tests)."""
        from instrument_env import alarms

        now = now or datetime.now(UTC)
        readings = self._simulator.readings(self.last, now, self.faults)
        self.last = now
        for first in range(0, len(readings), 2000):
            reply = self.client.request(
                "POST",
                "/api/v1/env/readings",
                readings[first : first + 2000],
                token=self.token,
                expect=(202,),
            )
            self.posted += reply.body["accepted"]
            self.rejected += len(reply.body["rejected"])
        if not self.evaluate:
            return
        with self.sessionmaker() as db:
            alarms.evaluate(db, now)
            db.commit()

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            try:
                self.step()
            except Exception as exc:  # keep feeding; the demo reports errors at the end
                self.errors.append(f"{exc.__class__.__name__}: {exc}")

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask the thread to stop; wait ``timeout_s`` (default 5 periods) for a post in
        flight to finish."""
        self._halt.set()
        self.join(timeout=5 * self.period_s if timeout_s is None else timeout_s)


def ac_fault(start: datetime, minutes: float, room: str = "krios-room"):
    """An air-conditioning failure in ``room`` from ``start`` for ``minutes``."""
    from instrument_env.sim import fault_at

    return fault_at("ac_failure", start, minutes, room=room)


def hours_ago(now: datetime, hours: float) -> datetime:
    return now - timedelta(hours=hours)


def start_monitor(database_url: str, log_path, *, every_s: float = 10.0):
    """Start the alarm monitor service (``cryofac env monitor``) as its own process, as
    a facility runs it beside the portal; returns the ``subprocess.Popen``."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "cryofac.cli",
        "env",
        "--db",
        database_url,
        "monitor",
        "--every",
        f"{every_s:g}",
    ]
    from workflows.control import die_with_this_process

    with open(log_path, "w") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_this_process(),  # a killed demo leaves no monitor behind
        )


def stop_monitor(process, timeout_s: float = 15.0) -> int | None:
    """Stop the monitor (SIGTERM, then SIGKILL after ``timeout_s``); its exit status."""
    import subprocess

    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
