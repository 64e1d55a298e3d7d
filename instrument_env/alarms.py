"""Alarms: one state machine per (sensor, rule), with a full audit trail.

States: ``pending`` (condition met, delay not yet over) → ``firing`` → ``acknowledged``
(a person took note, with a comment) → ``resolved`` (condition cleared past the
hysteresis band). A pending alarm whose condition goes away before its delay is
resolved without ever firing. There is at most one open alarm per rule
(de-duplication); a new excursion after resolution opens a new alarm. A firing alarm
left unacknowledged for the rule's ``escalate_after_s`` is escalated once: a
notification is written to the outbox (``env_notifications``).

A sensor that stops reporting is an alarm too (rule id ``stale:SENSOR``): it fires as
soon as the newest reading is older than the sensor's ``stale_after_s``.

Delays and clearing are judged on reading timestamps, so late readings and a
re-evaluation give the same answer; escalation and staleness use ``now``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cryofac.errors import CryofacError
from instrument_env import conditions as cond
from instrument_env.limits import EnvConfig, Rule, Sensor, load_env_config
from instrument_env.models import (
    ALARM_STATES,
    OPEN_STATES,
    Alarm,
    AlarmEvent,
    Notification,
    from_us,
    to_us,
)
from instrument_env.storage import last_reading_us


class AlarmNotFound(CryofacError):
    """No alarm with that id (portal: 404)."""


class AlarmStateConflict(CryofacError):
    """The alarm is not in a state that allows this action (portal: 409)."""


class InvalidAlarmRequest(CryofacError):
    """A malformed request, e.g. an empty comment or an unknown state (portal: 422)."""


STALE_PREFIX = "stale:"
CONFLICT_PREFIX = "conflict:"
#: How far back the start of an excursion is searched for (µs).
MAX_LOOKBACK_US = 7 * 86_400 * 1_000_000


def evaluate(session: Session, now: datetime, config: EnvConfig | None = None) -> list[Alarm]:
    """Advance every alarm to ``now``; returns the alarms that changed.

    Adds to ``session`` without committing.
    """
    config = config or load_env_config()
    now_us = to_us(now)
    changed: list[Alarm] = []
    open_alarms = {
        a.rule_id: a
        for a in session.execute(sa.select(Alarm).where(Alarm.state.in_(OPEN_STATES))).scalars()
    }
    for rule in config.rules:
        alarm = _evaluate_rule(session, rule, now_us, open_alarms.get(rule.id), now)
        if alarm is not None:
            changed.append(alarm)
    gated = {r.sensor for r in config.rules if r.gate}
    for sensor in config.sensors.values():
        alarm = _evaluate_stale(
            session, sensor, now_us, open_alarms.get(STALE_PREFIX + sensor.id), now, gated
        )
        if alarm is not None:
            changed.append(alarm)
    changed += _escalate(session, now, config)
    session.flush()
    return changed


def _transition(
    session: Session,
    alarm: Alarm,
    to_state: str,
    at: datetime,
    now: datetime,
    actor: str = "system",
    comment: str = "",
) -> None:
    event = AlarmEvent(
        from_state=alarm.state if alarm.id is not None else None,
        to_state=to_state,
        at=at,
        actor=actor,
        comment=comment,
    )
    alarm.state = to_state
    alarm.updated_at = now
    if alarm.id is None:
        session.add(alarm)
        session.flush()
        event.from_state = None
    event.alarm_id = alarm.id
    session.add(event)


def _episode(rule: Rule, ts: np.ndarray, breach: np.ndarray, clear: np.ndarray):
    """Where the current excursion of a judged series starts, fires and ends.

    An episode starts at the first reading beyond the alarm level after the last
    *long* cleared stretch (every reading back inside by the hysteresis for at least
    ``delay_s``); it fires at the first reading at least ``delay_s`` after its start
    whose trailing ``delay_s`` has at least ``breach_fraction`` of its readings beyond
    the level ("k of n"); it ends when the final cleared stretch lasts ``delay_s``.

    Returns ``(start, fire, end)`` indices into ``ts`` (each None when absent); ``start``
    is None when there is no episode, or it is -1 when the episode may have started
    before ``ts[0]`` (no long cleared stretch precedes it: look further back).
    """
    n = len(ts)
    delay_us = int(rule.delay_s * 1e6)
    # runs of consecutive cleared readings: [a, e] inclusive
    edges = np.diff(np.concatenate([[0], clear.astype(np.int8), [0]]))
    run_a, run_e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    long_runs = run_e[(ts[run_e] - ts[run_a]) >= delay_us] if len(run_a) else run_a
    end = None
    if len(run_a) and run_e[-1] == n - 1 and ts[-1] - ts[run_a[-1]] >= delay_us:
        end = int(run_a[-1])
    hits = np.flatnonzero(breach)
    if not len(hits):
        return None, None, end
    last_hit = hits[-1]
    before = long_runs[long_runs < last_hit]
    if len(before):
        start = int(hits[np.searchsorted(hits, before[-1], side="right")])
    else:
        start = -1 if hits[0] == 0 else int(hits[0])
    first = max(start, 0)
    counts = np.concatenate([[0], np.cumsum(breach)])
    candidates = np.arange(first, n)
    candidates = candidates[ts[candidates] - ts[first] >= delay_us]
    fire = None
    if len(candidates):
        lo = np.searchsorted(ts, ts[candidates] - delay_us, side="left")
        fraction = (counts[candidates + 1] - counts[lo]) / (candidates + 1 - lo)
        ok = np.flatnonzero(fraction >= rule.breach_fraction - 1e-12)
        if len(ok):
            fire = int(candidates[ok[0]])
    return start, fire, end


def _evaluate_rule(
    session: Session, rule: Rule, now_us: int, alarm: Alarm | None, now: datetime
) -> Alarm | None:
    lookback_us = int(max(4 * rule.delay_s, 600.0) * 1e6)
    if alarm is not None:
        lookback_us = max(lookback_us, now_us - to_us(alarm.started_at) + 1)
    alarm_level = rule.alarm_level
    while True:
        judged = cond.judged_series(session, rule, now_us - lookback_us, now_us)
        if not len(judged):
            return None
        ts, values = judged.ts_us, judged.values
        breach = cond.breaches(rule, values, alarm_level)
        clear = cond.cleared(rule, values, alarm_level)
        start, fire, end = _episode(rule, ts, breach, clear)
        # A new or pending alarm needs the true start of the excursion (it may lie
        # before the look-back, e.g. when buffered readings arrive late): look further.
        needs_start = alarm is None or alarm.state == "pending"
        if not (needs_start and start == -1) or lookback_us >= MAX_LOOKBACK_US:
            break
        lookback_us *= 4
    if start == -1:
        start = 0
    if alarm is not None and alarm.state != "pending" and end is not None:
        return _resolve(session, alarm, ts, end, now)
    if start is None or (end is not None and end > start):
        if alarm is not None and end is not None:  # pending, cleared before its delay
            return _resolve(session, alarm, ts, end, now)
        return None
    run_values = values[start:]
    critical = bool(cond.breaches(rule, run_values, rule.limit).any())
    severity = "critical" if critical else "warning"
    worst = cond.worst(rule, run_values)
    since_us = int(ts[start])
    if alarm is None:
        alarm = Alarm(
            rule_id=rule.id,
            room=rule.room,
            sensor=rule.sensor,
            quantity=rule.quantity,
            kind=rule.kind,
            severity=severity,
            unit=rule.unit,
            threshold=rule.level(severity),
            worst_value=worst,
            started_at=from_us(since_us),
            message="",
            state="pending",
        )
        alarm.message = _message(rule, severity, worst)
        _transition(session, alarm, "pending", from_us(since_us), now)
        changed = True
    else:
        changed = False
        if alarm.state == "pending" and to_us(alarm.started_at) != since_us:
            alarm.started_at = from_us(since_us)
            changed = True
        if severity == "critical" and alarm.severity != "critical":
            alarm.severity, alarm.threshold = "critical", rule.limit
            changed = True
        if (
            alarm.worst_value is None
            or cond.breaches(rule, np.array([worst]), alarm.worst_value).any()
        ):
            alarm.worst_value = worst
            changed = True
        alarm.message = _message(rule, alarm.severity, alarm.worst_value)
    if alarm.state == "pending" and fire is not None:
        alarm.fired_at = from_us(int(ts[fire]))
        _transition(session, alarm, "firing", alarm.fired_at, now)
        changed = True
    if changed:
        alarm.updated_at = now
    return alarm if changed else None


def _resolve(session: Session, alarm: Alarm, ts: np.ndarray, end: int, now: datetime) -> Alarm:
    """Resolve at the first reading of the final cleared stretch (``ts[end]``)."""
    at = from_us(int(ts[end]))
    if at < alarm.started_at:
        at = alarm.started_at
    alarm.resolved_at = at
    comment = "cleared before its delay" if alarm.state == "pending" else "cleared"
    _transition(session, alarm, "resolved", at, now, comment=comment)
    return alarm


def _message(rule: Rule, severity: str, worst: float) -> str:
    level = rule.level(severity)
    what = "peak-to-peak change" if rule.kind == "drift" else "value"
    return (
        f"{rule.describe()}: {what} {worst:.4g} {rule.unit} {cond.verb(rule)} "
        f"{severity} level {level:g} {rule.unit}"
    )


def _evaluate_stale(
    session: Session,
    sensor: Sensor,
    now_us: int,
    alarm: Alarm | None,
    now: datetime,
    gated: set[str],
) -> Alarm | None:
    last = last_reading_us(session, sensor.id, now_us)
    stale_us = int(sensor.stale_after_s * 1e6)
    silent = last is None or now_us - last > stale_us
    if silent and alarm is None:
        since = from_us(last + stale_us) if last is not None else now
        severity = "critical" if sensor.id in gated else "warning"
        last_text = from_us(last).isoformat() if last is not None else "never"
        alarm = Alarm(
            rule_id=STALE_PREFIX + sensor.id,
            room=sensor.room,
            sensor=sensor.id,
            quantity="*",
            kind="stale",
            severity=severity,
            unit="s",
            threshold=sensor.stale_after_s,
            worst_value=None,
            started_at=since,
            fired_at=since,
            message=(
                f"sensor {sensor.id} silent: no reading for more than "
                f"{sensor.stale_after_s:g} s (last reading: {last_text})"
            ),
            state="pending",
        )
        _transition(session, alarm, "pending", since, now)
        _transition(session, alarm, "firing", since, now)
        return alarm
    if not silent and alarm is not None:
        at = from_us(last)
        alarm.resolved_at = at
        _transition(session, alarm, "resolved", at, now, comment="sensor reporting again")
        return alarm
    return None


def _escalate(session: Session, now: datetime, config: EnvConfig) -> list[Alarm]:
    rules = {r.id: r for r in config.rules}
    changed = []
    firing = session.execute(
        sa.select(Alarm).where(Alarm.state == "firing", Alarm.escalated_at.is_(None))
    ).scalars()
    for alarm in firing:
        rule = rules.get(alarm.rule_id)
        after = rule.escalate_after_s if rule else config.default_escalate_after_s
        if alarm.fired_at is None or (now - alarm.fired_at).total_seconds() < after:
            continue
        alarm.escalated_at = now
        alarm.updated_at = now
        recipient = config.escalate_to.get(alarm.room, "facility-staff")
        session.add(
            Notification(
                alarm_id=alarm.id,
                kind="escalation",
                recipient=recipient,
                subject=f"[{alarm.severity}] unacknowledged alarm #{alarm.id} in {alarm.room}",
                body=(
                    f"{alarm.message}\nFiring since {alarm.fired_at.isoformat()}, "
                    f"not acknowledged after {after:g} s."
                ),
                created_at=now,
            )
        )
        session.add(
            AlarmEvent(
                alarm_id=alarm.id,
                at=now,
                from_state="firing",
                to_state="firing",
                actor="system",
                comment=f"escalated to {recipient}",
            )
        )
        changed.append(alarm)
    return changed


#: ``state`` filters besides the alarm states: every open alarm, and every alarm that
#: fired and nobody acknowledged yet (firing, or resolved since without an ack).
STATE_FILTERS = ("open", "unacknowledged")
SEVERITIES = ("warning", "critical")


def alarm_query(
    state: str | None = None,
    *,
    room: str | None = None,
    sensor: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> sa.Select:
    """The alarms matching the filters, newest first (``since``/``until`` bound
    ``started_at``). Raises :class:`InvalidAlarmRequest` for an unknown state or severity."""
    query = sa.select(Alarm).order_by(Alarm.started_at.desc(), Alarm.id.desc())
    if state == "open":
        query = query.where(Alarm.state.in_(OPEN_STATES))
    elif state == "unacknowledged":
        query = query.where(
            Alarm.fired_at.is_not(None),
            Alarm.acknowledged_at.is_(None),
            Alarm.state.in_(("firing", "resolved")),
        )
    elif state is not None:
        if state not in ALARM_STATES:
            raise InvalidAlarmRequest(
                f"unknown alarm state {state!r} (states: {', '.join(ALARM_STATES + STATE_FILTERS)})"
            )
        query = query.where(Alarm.state == state)
    if severity is not None:
        if severity not in SEVERITIES:
            raise InvalidAlarmRequest(
                f"unknown severity {severity!r} (severities: {', '.join(SEVERITIES)})"
            )
        query = query.where(Alarm.severity == severity)
    if room is not None:
        query = query.where(Alarm.room == room)
    if sensor is not None:
        query = query.where(Alarm.sensor == sensor)
    if since is not None:
        query = query.where(Alarm.started_at >= since)
    if until is not None:
        query = query.where(Alarm.started_at <= until)
    return query


def list_alarms(
    session: Session,
    state: str | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
    **filters,
) -> list[Alarm]:
    """Alarms, newest first; ``state`` one of pending/firing/acknowledged/resolved, or
    ``open`` / ``unacknowledged``; ``filters``: those of :func:`alarm_query` (room,
    sensor, severity, since, until); ``limit``/``offset`` page through them."""
    query = alarm_query(state, **filters)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return list(session.execute(query).scalars())


def count_alarms(session: Session, state: str | None = None, **filters) -> int:
    """How many alarms :func:`list_alarms` would list without a limit."""
    query = alarm_query(state, **filters).order_by(None)
    return int(session.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar())


def raise_conflict_alarm(session: Session, sensor: Sensor, count: int, now: datetime) -> Alarm:
    """Raise, or add ``count`` to, the open ``conflict:SENSOR`` alarm: readings of the
    sensor arrived with another value for a time already stored (a second publisher or
    a misconfigured logger). A warning; it needs an acknowledgement, which resolves it.
    The gate refuses on its own while conflicts fall in the settling window."""
    rule_id = CONFLICT_PREFIX + sensor.id
    alarm = session.execute(
        sa.select(Alarm).where(Alarm.rule_id == rule_id, Alarm.state.in_(OPEN_STATES))
    ).scalar()
    if alarm is None:
        alarm = Alarm(
            rule_id=rule_id,
            room=sensor.room,
            sensor=sensor.id,
            quantity="*",
            kind="conflict",
            severity="warning",
            unit="readings",
            threshold=None,
            worst_value=0.0,
            started_at=now,
            fired_at=now,
            message="",
            state="pending",
        )
        _transition(session, alarm, "pending", now, now, comment="conflicting readings")
        _transition(session, alarm, "firing", now, now)
    alarm.worst_value = float(alarm.worst_value or 0) + count
    alarm.updated_at = now
    alarm.message = (
        f"sensor {sensor.id}: {alarm.worst_value:.0f} reading(s) refused as conflicts: another "
        "value for a time already stored (a second publisher?)"
    )
    session.flush()
    return alarm


def get_alarm(session: Session, alarm_id: int) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise AlarmNotFound(f"no alarm with id {alarm_id}")
    return alarm


def acknowledge(
    session: Session, alarm_id: int, user: str, comment: str, *, now: datetime | None = None
) -> Alarm:
    """Acknowledge an alarm with a comment (who and why are kept in the history).

    A firing alarm becomes ``acknowledged``; an alarm that fired and resolved before
    anyone acknowledged it (e.g. escalated overnight) keeps ``resolved`` and records the
    acknowledgement; a conflict alarm is resolved by its acknowledgement.
    """
    from instrument_env.models import now_utc

    if not isinstance(comment, str) or not comment.strip():
        raise InvalidAlarmRequest("an acknowledgement needs a comment")
    if not user:
        raise InvalidAlarmRequest("an acknowledgement needs a user")
    alarm = get_alarm(session, alarm_id)
    unacked_resolved = (
        alarm.state == "resolved" and alarm.fired_at is not None and alarm.acknowledged_at is None
    )
    if alarm.state != "firing" and not unacked_resolved:
        if alarm.acknowledged_at is not None:
            when = alarm.acknowledged_at.isoformat(timespec="seconds")
            message = (
                f"alarm {alarm_id} was already acknowledged by {alarm.acknowledged_by} at "
                f"{when}; nothing more to do"
            )
        elif alarm.state == "pending":
            message = (
                f"alarm {alarm_id} has not fired yet (its condition has not lasted long "
                "enough); only an alarm that fired can be acknowledged"
            )
        else:
            message = (
                f"alarm {alarm_id} never fired (it cleared before it had to); only an alarm "
                "that fired can be acknowledged"
            )
        raise AlarmStateConflict(message)
    now = now or now_utc()
    alarm.acknowledged_at = now
    alarm.acknowledged_by = user
    alarm.ack_comment = comment.strip()
    to_state = "resolved" if unacked_resolved else "acknowledged"
    _transition(session, alarm, to_state, now, now, actor=user, comment=comment.strip())
    if alarm.kind == "conflict" and not unacked_resolved:
        alarm.resolved_at = now
        _transition(session, alarm, "resolved", now, now, actor=user, comment="acknowledged")
    session.flush()
    return alarm


def alarm_history(session: Session, alarm_id: int) -> list[AlarmEvent]:
    """Every state change of one alarm, oldest first."""
    get_alarm(session, alarm_id)
    return list(
        session.execute(
            sa.select(AlarmEvent)
            .where(AlarmEvent.alarm_id == alarm_id)
            .order_by(AlarmEvent.at, AlarmEvent.id)
        ).scalars()
    )
