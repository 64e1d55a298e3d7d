"""The alarm monitor: one always-running service that evaluates alarms whatever the
ingest path (HTTP, MQTT, CSV), refreshes rollups, and never exits on a fault.

Every ``every_s`` seconds it re-reads the configuration (an edited ``limits.yaml``
applies to the next cycle; a broken one is reported and the cycle skipped), advances
every alarm to now (:func:`instrument_env.alarms.evaluate`: fire, clear, escalate,
"no data"), refreshes the rollups and commits. A database that refuses or fails is
reported in one line and retried at the next cycle. ``cryofac env monitor`` runs it;
``cryofac demo`` starts it; in production run it as a service beside the portal
(README, "Services").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from instrument_env.limits import EnvConfig, load_env_config
from instrument_env.models import now_utc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorOptions:
    """``every_s``: seconds between evaluations; ``config_dir``: the facility
    configuration (None: cryofac's); ``rollups``: refresh rollups each cycle too."""

    every_s: float = 10.0
    config_dir: str | None = None
    rollups: bool = True


@dataclass
class MonitorStats:
    cycles: int = 0
    failures: int = 0
    changed: int = 0
    last_error: str = ""
    events: list[str] = field(default_factory=list)


def monitor_cycle(
    sessionmaker: Callable[[], Session],
    config: EnvConfig,
    now: datetime | None = None,
    *,
    rollups: bool = True,
) -> list[str]:
    """One evaluation: alarms advanced to ``now`` and committed; returns one line per
    changed alarm."""
    from instrument_env.alarms import evaluate
    from instrument_env.storage import refresh_rollups

    with sessionmaker() as session:
        changed = evaluate(session, now or now_utc(), config)
        lines = [f"alarm #{a.id} {a.state} [{a.severity}] {a.message}" for a in changed]
        if rollups:
            refresh_rollups(session)
        session.commit()
    return lines


def run_monitor(
    sessionmaker: Callable[[], Session],
    options: MonitorOptions = MonitorOptions(),
    *,
    stop: threading.Event | None = None,
    duration_s: float | None = None,
    on_event: Callable[[str], None] | None = None,
) -> MonitorStats:
    """Evaluate every ``options.every_s`` until ``stop`` is set (or ``duration_s``
    passed); faults are logged and retried, never raised."""
    stop = stop or threading.Event()
    stats = MonitorStats()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while True:
        started = time.monotonic()
        try:
            config = load_env_config(options.config_dir)
            for line in monitor_cycle(sessionmaker, config, rollups=options.rollups):
                stats.changed += 1
                if on_event is not None:
                    on_event(line)
        except Exception as exc:  # a service keeps running: report, retry next cycle
            stats.failures += 1
            detail = str(getattr(exc, "orig", None) or exc).splitlines()
            stats.last_error = f"{exc.__class__.__name__}: {detail[0] if detail else ''}"
            log.warning(
                "alarm evaluation failed (retrying in %g s): %s", options.every_s, stats.last_error
            )
            if on_event is not None:
                on_event(f"evaluation failed: {stats.last_error}")
        stats.cycles += 1
        if deadline is not None and time.monotonic() >= deadline:
            return stats
        wait = max(0.0, options.every_s - (time.monotonic() - started))
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        if stop.wait(wait):
            return stats
