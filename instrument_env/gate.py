"""The session gate: may a session start on this instrument now (or at ``at``)?

Allowed only when, for the instrument's room,

- every gated channel has readings and its sensor is fresh (newest reading no older
  than the sensor's ``stale_after_s``);
- every gated rule stayed within its ``limit`` for the whole settling window
  (``settling_window_s`` before ``at``);
- no critical alarm of the room is firing (or acknowledged but unresolved) at ``at``.

Missing data counts as out of limits (fails closed). Every reason is returned, each
naming the channel, the limit and since when. Staff may override a refusal with a
reason (:func:`record_override`, audited).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cryofac.errors import CryofacError
from instrument_env import conditions as cond
from instrument_env.limits import EnvConfig, UnknownInstrument, load_env_config, rule_band_filter
from instrument_env.models import Alarm, GateOverride, from_us, now_utc, to_us
from instrument_env.storage import (
    band_condition,
    channel_values_us,
    driver_fetchall,
    last_reading_of_channel_us,
)

log = logging.getLogger(__name__)


class InvalidOverride(CryofacError):
    """An override without a user or a reason (portal: 422)."""


@dataclass
class GateDecision:
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    checked_at: datetime = field(default_factory=now_utc)

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "checked_at": self.checked_at.isoformat(),
        }


def _fmt(ts_us: int) -> str:
    return from_us(int(ts_us)).isoformat(timespec="seconds")


def evaluate_gate(
    session: Session,
    instrument_id: str,
    at: datetime | None = None,
    *,
    config: EnvConfig | None = None,
) -> GateDecision:
    """Decide whether a session may start on ``instrument_id`` at ``at`` (default: now).

    Raises :class:`UnknownInstrument` for an id not in the configuration. Any other
    failure while deciding refuses (fails closed) with the failure as the reason.
    """
    config = config or load_env_config()
    instrument = config.instrument(instrument_id)
    at = at or now_utc()
    if not instrument.environment_gated:
        return GateDecision(True, [], at)
    try:
        with _serial_plans(session):
            reasons = _reasons(session, instrument.room, to_us(at), config)
    except UnknownInstrument:
        raise
    except Exception as exc:  # fail closed, but say why (one line, no SQL)
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
        log.warning(
            "gate evaluation failed for %s: %s: %s", instrument_id, type(exc).__name__, detail
        )
        log.debug("gate evaluation failure", exc_info=True)
        reasons = [f"gate could not be evaluated ({exc.__class__.__name__}: {detail})"]
    return GateDecision(not reasons, reasons, at)


@contextmanager
def _serial_plans(session: Session) -> Iterator[None]:
    """On PostgreSQL, no parallel plans for the gate's reads (``SET LOCAL``, this
    transaction only, back to the default afterwards).

    The statistics query is a UNION ALL of small index range scans; PostgreSQL plans it
    with parallel workers, whose start-up cost far more than the scans: on a 2-CPU
    machine with 30 days of 1 Hz data, 44 ms median per decision with workers, 12 ms
    without (benchmarks/env_ingest_gate.py, BENCHMARKS.md). In an autocommit
    connection ``SET LOCAL`` does nothing (PostgreSQL warns), which is harmless.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = 0"))
    yield
    if postgres:  # not after a failure: the transaction is then aborted anyway
        session.execute(sa.text("SET LOCAL max_parallel_workers_per_gather = DEFAULT"))


def _reasons(session: Session, room: str, at_us: int, config: EnvConfig) -> list[str]:
    window_s = config.settling_window_s[room]
    start_us = at_us - int(window_s * 1e6)
    rules = [r for r in config.rules_for_room(room) if r.gate]
    reasons: list[str] = []
    if not rules:
        return [f"room {room} has no gated channels configured (fail closed)"]
    stale_channels: set[tuple[str, str]] = set()
    # One index range aggregate per channel answers staleness and, usually, every rule
    # of the channel; only a channel that might be out of limits is read in full.
    stats = _channel_stats(session, rules, start_us, at_us)
    newest_of: dict[tuple[str, str], int | None] = {}
    for rule in rules:
        newest = stats[_channel_key(rule)].newest
        known = newest_of.get((rule.sensor, rule.quantity))
        newest_of[(rule.sensor, rule.quantity)] = max(
            (t for t in (known, newest) if t is not None), default=None
        )
    for (sensor_id, quantity), newest in newest_of.items():
        sensor = config.sensors[sensor_id]
        if newest is not None and at_us - newest <= sensor.stale_after_s * 1e6:
            continue
        last = last_reading_of_channel_us(session, sensor_id, quantity, at_us)
        if last is None:
            reasons.append(f"{sensor_id} {quantity}: no readings at all (sensor silent)")
            stale_channels.add((sensor_id, quantity))
        elif at_us - last > sensor.stale_after_s * 1e6:
            silent_s = (at_us - last) / 1e6
            reasons.append(
                f"{sensor_id} {quantity}: sensor silent since {_fmt(last)} "
                f"({silent_s:.0f} s without a reading; stale after {sensor.stale_after_s:g} s)"
            )
            stale_channels.add((sensor_id, quantity))
    exact = [rule for rule in rules if not stats[_channel_key(rule)].certainly_within(rule)]
    # Rules of one channel (e.g. a high and a drift rule on a temperature) share one
    # read covering the longest look-back among them.
    reach: dict[tuple[str, str, str | None], int] = {}
    for rule in exact:
        key = _channel_key(rule)
        reach[key] = max(reach.get(key, 0), cond.lookback_us(rule))
    readings = {
        key: channel_values_us(session, key[0], key[1], start_us - back, at_us, band=key[2])
        for key, back in reach.items()
    }
    for rule in exact:
        judged = cond.judged_series(
            session, rule, start_us, at_us, readings=readings[_channel_key(rule)]
        )
        if not len(judged):
            if (rule.sensor, rule.quantity) not in stale_channels:
                reasons.append(
                    f"{rule.describe()}: no readings in the settling window "
                    f"({window_s:g} s before {_fmt(at_us)})"
                )
            continue
        out = cond.breaches(rule, judged.values, rule.limit)
        if not out.any():
            continue
        bad = np.flatnonzero(out)
        last_bad = int(judged.ts_us[bad[-1]])
        # start of the latest out-of-limits run
        good_before = np.flatnonzero(~out[: bad[-1]])
        since = int(judged.ts_us[good_before[-1] + 1 if len(good_before) else 0])
        worst = cond.worst(rule, judged.values[out])
        state = (
            "still out of limits"
            if bad[-1] == len(out) - 1
            else f"back in limits after {_fmt(last_bad)}, settled at "
            f"{_fmt(last_bad + int(window_s * 1e6))}"
        )
        what = "peak-to-peak change" if rule.kind == "drift" else "value"
        reasons.append(
            f"{rule.describe()}: {what} {worst:.4g} {rule.unit} {cond.verb(rule)} limit "
            f"{rule.limit:g} {rule.unit} (rule {rule.id}) since {_fmt(since)}; {state}"
        )
    at = from_us(at_us)
    alarms = session.execute(
        sa.select(Alarm).where(
            Alarm.room == room,
            Alarm.severity == "critical",
            Alarm.state.in_(("firing", "acknowledged", "resolved")),
            Alarm.fired_at.is_not(None),
            Alarm.fired_at <= at,
            sa.or_(Alarm.resolved_at.is_(None), Alarm.resolved_at > at),
        )
    ).scalars()
    for alarm in alarms:
        reasons.append(
            f"critical alarm #{alarm.id} ({alarm.rule_id}) {alarm.state} since "
            f"{alarm.fired_at.isoformat(timespec='seconds')}: {alarm.message}"
        )
    return reasons


def _channel_key(rule) -> tuple[str, str, str | None]:
    return (rule.sensor, rule.quantity, rule_band_filter(rule))


@dataclass
class _ChannelStats:
    """Extremes of one channel in the settling window and in the window plus look-back."""

    start_us: int
    lo: float | None  # within [start, at]
    hi: float | None
    lo_ext: float | None  # within [start - longest drift window, at]
    hi_ext: float | None
    newest: int | None  # newest reading at or before ``at`` in the extended window

    def certainly_within(self, rule) -> bool:
        """A sufficient test: True only when the rule certainly held over the window.

        For a drift rule the whole range of readings in the window plus its look-back
        bounds every trailing peak-to-peak change. Anything else — including no data in
        the window — goes to the exact evaluation, which also explains a refusal.
        """
        if self.lo is None or self.newest is None or self.newest < self.start_us:
            return False
        if rule.kind == "drift":
            return self.hi_ext - self.lo_ext <= rule.limit
        if rule.kind == "low":
            return self.lo >= rule.limit
        return self.hi <= rule.limit


def _channel_stats(session: Session, rules, start_us: int, at_us: int) -> dict:
    """Per channel extremes and newest reading, in one round trip (UNION ALL)."""
    lookback: dict[tuple, int] = {}
    for rule in rules:
        key = _channel_key(rule)
        lookback[key] = max(lookback.get(key, 0), cond.lookback_us(rule))
    keys = list(lookback)
    sql, names = _STATS_SQL.get(tuple(keys), (None, None))
    if sql is None:
        selects, names = [], {}
        for index, (sensor, quantity, band) in enumerate(keys):
            names.update({f"s{index}": sensor, f"q{index}": quantity})
            where = (
                f"sensor = :s{index} AND quantity = :q{index} "
                f"AND ts_us >= :from{index} AND ts_us <= :at"
            )
            if band is not None:
                condition, bound = band_condition(band, f"b{index}")
                where += condition
                names.update(bound)
            selects.append(
                f"SELECT {index} AS k, "
                "min(CASE WHEN ts_us >= :start THEN value END) AS lo, "
                "max(CASE WHEN ts_us >= :start THEN value END) AS hi, "
                "min(value) AS lo_ext, max(value) AS hi_ext, max(ts_us) AS newest "
                f"FROM env_readings WHERE {where}"
            )
        sql = " UNION ALL ".join(selects)
        _STATS_SQL[tuple(keys)] = (sql, names)
    params = {**names, "start": start_us, "at": at_us}
    params.update({f"from{i}": start_us - lookback[key] for i, key in enumerate(keys)})
    rows = driver_fetchall(session, sql, params)
    return {keys[row[0]]: _ChannelStats(start_us, *row[1:]) for row in rows}


#: The statistics query (one SELECT per channel) and its channel names, per channel list.
_STATS_SQL: dict[tuple, tuple[str, dict]] = {}


def record_override(
    session: Session,
    instrument_id: str,
    user: str,
    reason: str,
    decision: GateDecision | None = None,
    *,
    at: datetime | None = None,
    config: EnvConfig | None = None,
) -> GateOverride:
    """Record a staff override of a refused gate (who, why, and what was overridden)."""
    config = config or load_env_config()
    config.instrument(instrument_id)
    if not user or not isinstance(reason, str) or not reason.strip():
        raise InvalidOverride("a gate override needs a user and a written reason")
    override = GateOverride(
        instrument_id=instrument_id,
        at=at or now_utc(),
        user=user,
        reason=reason.strip(),
        refused_reasons=json.dumps(decision.reasons if decision else []),
    )
    session.add(override)
    session.flush()
    return override
