"""The session gate: may a session start on this instrument now (or at ``at``)?

Allowed only when, for the instrument's room,

- every gated channel has readings and its sensor is fresh (newest reading no older
  than the sensor's ``stale_after_s``);
- every gated channel's settling window is *covered* by plausible readings: no gap
  longer than ``coverage.max_gap_intervals`` × the sensor's ``interval_s`` (from the
  window's start to the first reading, or between readings) and at least
  ``coverage.min_fraction`` of the expected readings (implausible readings are kept
  outside the series at ingest, so they count as missing);
- no reading of a gated sensor in the settling window was refused as a conflict (a
  second publisher: the stored series cannot be trusted);
- every gated rule stayed within its ``limit`` for the whole settling window
  (``settling_window_s`` before ``at``);
- no critical alarm of the room is firing (or acknowledged but unresolved) at ``at``.

Missing data counts as out of limits (fails closed). Every reason is returned, each
naming the channel, the limit and since when, as of ``at``. Staff may override a
refusal with a reason (:func:`record_override`, audited; shown in the provenance).

A decision is bounded in time: the reads run under a deadline
(:mod:`~instrument_env.deadline`, ``timeout_s``) and, on PostgreSQL, a
``statement_timeout``. When the gate cannot decide (database unreachable or silent,
configuration broken), it refuses with the reason and ``decided`` False (HTTP 503).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cryofac.errors import CryofacError
from instrument_env import conditions as cond
from instrument_env import coverage
from instrument_env.deadline import deadline
from instrument_env.limits import (
    ANY_BAND,
    MAX_BAND,
    EnvConfig,
    UnknownInstrument,
    load_env_config,
    rule_band_filter,
)
from instrument_env.models import (
    Alarm,
    GateOverride,
    band_set_text,
    from_us,
    now_utc,
    to_us,
)
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
    """``allowed`` with every reason; ``decided`` False when the gate could not judge
    (database or configuration trouble), which refuses too (portal: 503)."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    checked_at: datetime = field(default_factory=now_utc)
    decided: bool = True

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "checked_at": self.checked_at.isoformat(),
        }


def _fmt(ts_us: int) -> str:
    return from_us(int(ts_us)).isoformat(timespec="seconds")


#: Default bound on one gate decision's database work (seconds).
GATE_TIMEOUT_S = 5.0


def evaluate_gate(
    session: Session,
    instrument_id: str,
    at: datetime | None = None,
    *,
    config: EnvConfig | None = None,
    timeout_s: float = GATE_TIMEOUT_S,
) -> GateDecision:
    """Decide whether a session may start on ``instrument_id`` at ``at`` (default: now).

    Raises :class:`UnknownInstrument` for an id not in the configuration. Any other
    failure while deciding — a broken configuration file, a database that refuses,
    fails or does not answer within ``timeout_s`` seconds — refuses (fails closed) with
    the failure as the reason and ``decided=False``.
    """
    at = at or now_utc()
    try:
        config = config or load_env_config()
    except CryofacError as exc:  # ConfigError: a broken limits.yaml/facility.yaml
        return GateDecision(False, [f"configuration cannot be read: {exc}"], at, decided=False)
    instrument = config.instrument(instrument_id)
    if not instrument.environment_gated:
        return GateDecision(True, [], at)
    fired = None
    try:
        with deadline(session, timeout_s) as fired, _serial_plans(session, timeout_s):
            reasons = _reasons(session, instrument.room, to_us(at), config)
    except UnknownInstrument:
        raise
    except Exception as exc:  # fail closed, but say why (one line, no SQL)
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
        log.warning(
            "gate evaluation failed for %s: %s: %s", instrument_id, type(exc).__name__, detail
        )
        log.debug("gate evaluation failure", exc_info=True)
        if fired is not None and fired.is_set():
            detail = f"the database did not answer within {timeout_s:g} s"
        return GateDecision(
            False,
            [f"gate could not be evaluated ({exc.__class__.__name__}: {detail})"],
            at,
            decided=False,
        )
    return GateDecision(not reasons, reasons, at)


@contextmanager
def _serial_plans(session: Session, timeout_s: float) -> Iterator[None]:
    """On PostgreSQL, no parallel plans for the gate's reads (``SET LOCAL``, this
    transaction only, back to the default afterwards).

    The statistics query is a UNION ALL of small index range scans; PostgreSQL plans it
    with parallel workers, whose start-up cost far more than the scans: on a 2-CPU
    machine with 30 days of 1 Hz data, 44 ms median per decision with workers, 12 ms
    without (benchmarks/env_ingest_gate.py, BENCHMARKS.md). In an autocommit
    connection ``SET LOCAL`` does nothing (PostgreSQL warns), which is harmless.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:  # both settings in one round trip (set_config(..., true): SET LOCAL)
        timeout_ms = str(max(1, int(timeout_s * 1000)))
        session.execute(_SET_GATE_SQL, {"timeout_ms": timeout_ms})
    yield
    if postgres:  # not after a failure: the transaction is then aborted anyway
        session.execute(_RESET_GATE_SQL)  # each back to its default (SET LOCAL ... DEFAULT)


_SET_GATE_SQL = sa.text(
    "SELECT set_config('max_parallel_workers_per_gather', '0', true), "
    "set_config('statement_timeout', :timeout_ms, true)"
)
_RESET_GATE_SQL = sa.text(
    "SELECT set_config(name, reset_val, true) FROM pg_settings "
    "WHERE name IN ('max_parallel_workers_per_gather', 'statement_timeout')"
)


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
    need = config.coverage_for(room)
    bucket_us = {
        sensor: max(1, int(need.max_gap_intervals * config.sensors[sensor].interval_s * 5e5))
        for sensor in {rule.sensor for rule in rules}
    }
    stats = _channel_stats(session, rules, start_us, at_us, bucket_us)
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
    reasons += _coverage_reasons(
        session, config, rules, stats, stale_channels, start_us, at_us, bucket_us
    )
    reasons += _conflict_reasons(session, rules, start_us, at_us)
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
        # the alarm as it was at ``at`` (it may have been acknowledged or resolved since)
        if alarm.acknowledged_at is not None and alarm.acknowledged_at <= at:
            state, since = "acknowledged (not resolved)", alarm.acknowledged_at
        else:
            state, since = "firing", alarm.fired_at
        reasons.append(
            f"critical alarm #{alarm.id} ({alarm.rule_id}) {state} at "
            f"{at.isoformat(timespec='seconds')}, since "
            f"{since.isoformat(timespec='seconds')}: {alarm.message}"
        )
    return reasons


def _coverage_reasons(
    session: Session,
    config: EnvConfig,
    rules,
    stats: dict,
    stale_channels: set,
    start_us: int,
    at_us: int,
    bucket_us: dict[str, int],
) -> list[str]:
    """One reason per gated channel (per band of a banded quantity) whose settling
    window is not covered (:mod:`~instrument_env.coverage`); silent channels and
    channels without any reading in the window are reported elsewhere.

    The statistics (count, non-empty buckets of half the allowed gap) prove most
    channels covered; only the others are read in full and judged."""
    room = rules[0].room
    need = config.coverage_for(room)
    window_us = at_us - start_us
    reasons = []
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        channel = (rule.sensor, rule.quantity)
        if channel in seen or channel in stale_channels:
            continue
        seen.add(channel)
        stat = stats[_channel_key(rule)]
        if not stat.n:
            continue  # "no readings in the settling window", from the rule
        interval_s = config.sensors[rule.sensor].interval_s
        buckets_needed = -(-window_us // bucket_us[rule.sensor])
        covered = (
            stat.n / (window_us / 1e6 / interval_s) >= need.min_fraction
            and stat.buckets >= buckets_needed
        )
        bands = config.bands.get(rule.quantity)
        if bands:  # stat counts the channel's reading times (any band) for these keys
            every_time = _channel_key(rule)[2] in (MAX_BAND, None)
            if not (
                covered
                and every_time
                and _every_band_at_every_time(session, rule, bands, stat.n, start_us, at_us)
            ):
                reasons += _band_coverage_reasons(
                    session, rule, bands, need, start_us, at_us, bucket_us[rule.sensor], interval_s
                )
            continue
        if covered:
            continue
        judged = _judge_window(session, rule, None, need, (start_us, at_us), interval_s)
        if not judged.ok:
            reasons.append(judged.reason("settling window"))
    return reasons


def _judge_window(session: Session, rule, band, need, window, interval_s: float):
    """Read ``rule``'s channel (one ``band`` of it, or the rule's own band filter for
    None) over the settling ``window`` and judge its coverage (no tail: freshness is
    judged apart)."""
    ts, _ = channel_values_us(
        session, rule.sensor, rule.quantity, *window, band=band or rule_band_filter(rule)
    )
    channel = (rule.sensor, rule.quantity, band, False)
    return coverage.judge(ts, window, interval_s, need, channel)


_BAND_STATS_SQL = (
    "SELECT band, count(*), count(DISTINCT (ts_us - :start) / CAST(:w AS BIGINT)) "
    "FROM env_readings WHERE sensor = :sensor AND quantity = :quantity "
    "AND ts_us >= :start AND ts_us <= :at AND band <> '' AND band <> 'max' GROUP BY band"
)


def _every_band_at_every_time(
    session: Session, rule, bands: tuple[str, ...], times: int, start_us: int, at_us: int
) -> bool:
    """True when each of ``bands`` has a reading at each of the ``times`` reading times
    of the channel in the window: one :class:`~instrument_env.models.BandTimes` row per
    time (kept at ingest), all ``times`` of them holding exactly ``bands``. One row per
    time instead of one index entry per band and time; any other answer (a band missing
    or extra at some time, a time without its row) goes to the per-band statistics."""
    params = {"sensor": rule.sensor, "quantity": rule.quantity, "start": start_us, "at": at_us}
    (count, lo, hi), *_ = driver_fetchall(session, _BAND_TIMES_SQL, params)
    return count == times and lo == hi == band_set_text(bands)


_BAND_TIMES_SQL = (
    "SELECT count(*), min(bands), max(bands) FROM env_band_times "
    "WHERE sensor = :sensor AND quantity = :quantity AND ts_us >= :start AND ts_us <= :at"
)


def _band_coverage_reasons(
    session: Session,
    rule,
    bands: tuple[str, ...],
    need,
    start_us: int,
    at_us: int,
    bucket: int,
    interval_s: float,
) -> list[str]:
    """Coverage band by band (each band a channel of its own): one reason for the bands
    without a single plausible reading, one per band covered only in part."""
    params = {
        "sensor": rule.sensor,
        "quantity": rule.quantity,
        "start": start_us,
        "at": at_us,
        "w": bucket,
    }
    counts = {band: (n, b) for band, n, b in driver_fetchall(session, _BAND_STATS_SQL, params)}
    window_us = at_us - start_us
    expected = window_us / 1e6 / interval_s
    buckets_needed = -(-window_us // bucket)
    empty, failed = [], {}
    for band in bands:
        n, filled = counts.get(band, (0, 0))
        if not n:
            empty.append(band)
            continue
        if n / expected >= need.min_fraction and filled >= buckets_needed:
            continue
        judged = _judge_window(session, rule, band, need, (start_us, at_us), interval_s)
        if not judged.ok:  # bands with the same gaps and counts: one reason
            key = (judged.received, judged.covered_us, judged.longest_gap)
            failed.setdefault(key, []).append(judged)
    reasons = []
    for alike in failed.values():
        if len(alike) == len(bands):
            whole = f"{rule.sensor} {rule.quantity}"
            text = replace(alike[0], band=None).reason("settling window")
            reasons.append(text.replace(whole, f"{whole} (all {len(bands)} bands)", 1))
        else:
            label = ", ".join(j.band for j in alike)
            reasons.append(replace(alike[0], band=label).reason("settling window"))
    if empty:
        reasons.insert(
            0,
            f"{rule.sensor} {rule.quantity}: {len(empty)} of {len(bands)} bands without a "
            f"plausible reading in the {coverage.duration_text(window_us / 1e6)} settling "
            f"window ({_fmt(start_us)} to {_fmt(at_us)}): "
            f"{', '.join(empty)} Hz (each band must be covered)",
        )
    return reasons


_CONFLICTS_SQL = (
    "SELECT sensor, count(*), min(ts_us), max(ts_us) FROM env_rejected_readings "
    "WHERE kind = 'conflict' AND sensor IN ({sensors}) AND ts_us >= :start AND ts_us <= :at "
    "GROUP BY sensor ORDER BY sensor"
)


def _conflict_reasons(session: Session, rules, start_us: int, at_us: int) -> list[str]:
    """A reason per gated sensor with readings refused as conflicts in the window."""
    sensors = sorted({rule.sensor for rule in rules})
    names = {f"c{i}": sensor for i, sensor in enumerate(sensors)}
    sql = _CONFLICTS_SQL.format(sensors=", ".join(f":{name}" for name in names))
    rows = driver_fetchall(session, sql, {**names, "start": start_us, "at": at_us})
    return [
        f"{sensor}: {count} reading(s) between {_fmt(first)} and {_fmt(last)} conflict with "
        "stored readings (another value for the same time: a second publisher?); the "
        "settling window's readings cannot be trusted"
        for sensor, count, first, last in rows
    ]


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
    n: int = 0  # readings (distinct times) within [start, at]
    buckets: int = 0  # non-empty buckets of half the allowed gap within [start, at]

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


def _channel_stats(
    session: Session, rules, start_us: int, at_us: int, bucket_us: dict[str, int] | None = None
) -> dict:
    """Per channel extremes, newest reading, count and non-empty buckets (of
    ``bucket_us[sensor]``, half the sensor's allowed gap), in one round trip (UNION ALL).

    Every bucket holding a reading proves no gap reaches twice the bucket: the gap test
    of :func:`_coverage_reasons` without a window function (a plain aggregate is several
    times cheaper on PostgreSQL); a missing bucket sends the channel to the exact test.
    """
    lookback: dict[tuple, int] = {}
    for rule in rules:
        key = _channel_key(rule)
        lookback[key] = max(lookback.get(key, 0), cond.lookback_us(rule))
    keys = list(lookback)
    # several rows per time only where every band of a banded channel is read
    multi = {
        _channel_key(rule)
        for rule in rules
        if rule.band == ANY_BAND and rule_band_filter(rule) is None
    }
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
            # one row per time for a band filter; several (one per band) without
            count = (
                "count(DISTINCT CASE WHEN ts_us >= :start THEN ts_us END)"
                if (sensor, quantity, band) in multi
                else "count(CASE WHEN ts_us >= :start THEN 1 END)"
            )
            selects.append(
                f"SELECT {index} AS k, "
                "min(CASE WHEN ts_us >= :start THEN value END) AS lo, "
                "max(CASE WHEN ts_us >= :start THEN value END) AS hi, "
                "min(value) AS lo_ext, max(value) AS hi_ext, max(ts_us) AS newest, "
                f"{count} AS n, "
                "count(DISTINCT CASE WHEN ts_us >= :start THEN "
                f"(ts_us - :start) / CAST(:w{index} AS BIGINT) END) AS buckets "
                f"FROM env_readings WHERE {where}"
            )
        sql = " UNION ALL ".join(selects)
        _STATS_SQL[tuple(keys)] = (sql, names)
    params = {**names, "start": start_us, "at": at_us}
    params.update({f"from{i}": start_us - lookback[key] for i, key in enumerate(keys)})
    bucket_us = bucket_us or {}
    params.update({f"w{i}": bucket_us.get(key[0], 30_000_000) for i, key in enumerate(keys)})
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
