"""Environmental provenance of a time window: what the room was like during acquisition.

:func:`summarize` returns a JSON-ready dict for an instrument (its room) or a room:
per channel (sensor, quantity, band) the count, min, mean and max of the readings;
per rule the time spent beyond its limit and beyond its warning level, with the
excursions (start, end, worst value); the alarms active during the window and any
gate overrides; the coverage of each gated channel (readings received against
expected, gaps) and the readings refused at ingest. :func:`write_provenance` writes it as JSON next to a session's data.

Time out of limits: each reading stands for the interval until the next reading of
its channel, capped at the sensor's ``stale_after_s`` (after that the channel counts as
silent, not as out of limits), and clipped to the window.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cryofac.fileio import atomic_write
from instrument_env import conditions as cond
from instrument_env import coverage
from instrument_env.limits import EnvConfig, Rule, load_env_config
from instrument_env.models import Alarm, GateOverride, Reading, RejectedReading, from_us, to_us
from instrument_env.storage import channel_values_us

FORMAT_VERSION = 1


def _iso(ts_us: int) -> str:
    return from_us(int(ts_us)).isoformat()


def _resolve_room(target: str, config: EnvConfig) -> tuple[str, str | None]:
    if target in config.rooms:
        return target, None
    return config.instrument(target).room, target


def summarize(
    session: Session,
    target: str,
    start: datetime,
    end: datetime,
    *,
    config: EnvConfig | None = None,
) -> dict:
    """Provenance of ``target`` (instrument id or room id) over ``[start, end]``."""
    config = config or load_env_config()
    if end <= start:
        raise ValueError("provenance window must end after it starts")
    room, instrument = _resolve_room(target, config)
    start_us, end_us = to_us(start), to_us(end)
    sensors = [s.id for s in config.sensors_in_room(room)]
    channels = []
    if sensors:
        rows = session.execute(
            sa.select(
                Reading.sensor,
                Reading.quantity,
                Reading.band,
                sa.func.count(),
                sa.func.min(Reading.value),
                sa.func.avg(Reading.value),
                sa.func.max(Reading.value),
                sa.func.min(Reading.ts_us),
                sa.func.max(Reading.ts_us),
                sa.func.min(Reading.unit),
            )
            .where(
                Reading.sensor.in_(sensors),
                Reading.ts_us >= start_us,
                Reading.ts_us <= end_us,
            )
            .group_by(Reading.sensor, Reading.quantity, Reading.band)
            .order_by(Reading.sensor, Reading.quantity, Reading.band)
        ).all()
        for sensor, quantity, band, n, vmin, vmean, vmax, first, last, unit in rows:
            entry = {"sensor": sensor, "quantity": quantity}
            if band:
                entry["band"] = band
            entry.update(
                unit=unit,
                n=int(n),
                min=float(vmin),
                mean=float(vmean),
                max=float(vmax),
                first=_iso(first),
                last=_iso(last),
            )
            channels.append(entry)
    rules = [
        _rule_summary(session, rule, start_us, end_us, config)
        for rule in config.rules_for_room(room)
    ]
    alarms = session.execute(
        sa.select(Alarm)
        .where(
            Alarm.room == room,
            Alarm.started_at <= end,
            sa.or_(Alarm.resolved_at.is_(None), Alarm.resolved_at >= start),
        )
        .order_by(Alarm.started_at, Alarm.id)
    ).scalars()
    overrides = []
    if instrument is not None:
        overrides = [
            {"at": o.at.isoformat(), "user": o.user, "reason": o.reason}
            for o in session.execute(
                sa.select(GateOverride)
                .where(
                    GateOverride.instrument_id == instrument,
                    GateOverride.at >= start,
                    GateOverride.at <= end,
                )
                .order_by(GateOverride.at)
            ).scalars()
        ]
    coverage = channel_coverage(session, config, room, start_us, end_us)
    return {
        "format_version": FORMAT_VERSION,
        "room": room,
        "instrument": instrument,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "channels": channels,
        "rules": rules,
        "in_limits": all(r["time_out_of_limits_s"] == 0 for r in rules if r["gate"]),
        "coverage": coverage,
        "covered": all(c["covered"] for c in coverage),
        "rejected_readings": _rejected_counts(session, sensors, start_us, end_us),
        "alarms": [a.to_dict() for a in alarms],
        "gate_overrides": overrides,
    }


def channel_coverage(
    session: Session, config: EnvConfig, room: str, start_us: int, end_us: int
) -> list[dict]:
    """How well the readings of each gated channel of ``room`` cover ``[start, end]``, by
    the gate's own test (:func:`instrument_env.coverage.judge`, the tail after the last
    reading counting as a gap): time covered, the longest gap, every gap longer than
    allowed, readings received and expected; a banded quantity band by band."""
    need = config.coverage_for(room)
    out = []
    seen = set()
    for rule in config.rules_for_room(room):
        channel = (rule.sensor, rule.quantity)
        if not rule.gate or channel in seen:
            continue
        seen.add(channel)
        interval_s = config.sensors[rule.sensor].interval_s
        for band in config.bands.get(rule.quantity) or (None,):
            ts, _ = channel_values_us(
                session, rule.sensor, rule.quantity, start_us, end_us, band=band
            )
            judged = coverage.judge(
                ts, (start_us, end_us), interval_s, need, (rule.sensor, rule.quantity, band)
            )
            # the same words as the gate's reason, for the acquisition
            out.append({**judged.to_dict(), "summary": judged.reason("acquisition")})
    return out


def _rejected_counts(session: Session, sensors: list[str], start_us: int, end_us: int):
    """Readings of the room's sensors refused at ingest in the window, per sensor and kind."""
    if not sensors:
        return []
    rows = session.execute(
        sa.select(RejectedReading.sensor, RejectedReading.kind, sa.func.count())
        .where(
            RejectedReading.sensor.in_(sensors),
            RejectedReading.ts_us >= start_us,
            RejectedReading.ts_us <= end_us,
        )
        .group_by(RejectedReading.sensor, RejectedReading.kind)
        .order_by(RejectedReading.sensor, RejectedReading.kind)
    ).all()
    return [{"sensor": s, "kind": k, "count": int(n)} for s, k, n in rows]


def _rule_summary(
    session: Session, rule: Rule, start_us: int, end_us: int, config: EnvConfig
) -> dict:
    judged = cond.judged_series(session, rule, start_us, end_us)
    cap_us = int(config.sensors[rule.sensor].stale_after_s * 1e6)
    ts = judged.ts_us
    if len(ts):
        nxt = np.append(ts[1:], end_us)
        durations = np.minimum(np.minimum(nxt, end_us) - ts, cap_us).clip(min=0)
    else:
        durations = np.empty(0, dtype=np.int64)
    out_mask = cond.breaches(rule, judged.values, rule.limit)
    warn_mask = cond.breaches(rule, judged.values, rule.alarm_level)
    excursions = []
    if out_mask.any():
        edges = np.diff(np.concatenate([[0], out_mask.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            excursions.append(
                {
                    "start": _iso(ts[a]),
                    "end": _iso(ts[b - 1] + durations[b - 1]),
                    "worst": cond.worst(rule, judged.values[a:b]),
                }
            )
    return {
        "rule": rule.id,
        "channel": rule.describe(),
        "kind": rule.kind,
        "unit": rule.unit,
        "limit": rule.limit,
        "warning": rule.warning,
        "gate": rule.gate,
        "n": int(len(ts)),
        "worst": cond.worst(rule, judged.values) if len(ts) else None,
        "time_out_of_limits_s": float(durations[out_mask].sum() / 1e6),
        "time_beyond_warning_s": float(durations[warn_mask].sum() / 1e6),
        "excursions": excursions,
    }


def write_provenance(path: str | os.PathLike, session: Session, *args, **options) -> dict:
    """Write :func:`summarize` (``args``: target, start, end; ``options``: config) as
    JSON to ``path`` (atomically); returns the summary."""
    summary = summarize(session, *args, **options)
    atomic_write(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
