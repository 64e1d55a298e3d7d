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


def _evaluate_rule(
    session: Session, rule: Rule, now_us: int, alarm: Alarm | None, now: datetime
) -> Alarm | None:
    lookback_us = int(max(2 * rule.delay_s, 600.0) * 1e6)
    if alarm is not None and alarm.state == "pending":
        lookback_us = max(lookback_us, now_us - to_us(alarm.started_at) + 1)
    alarm_level = rule.alarm_level
    while True:
        judged = cond.judged_series(session, rule, now_us - lookback_us, now_us)
        if not len(judged):
            return None
        ts, values = judged.ts_us, judged.values
        breach = cond.breaches(rule, values, alarm_level)
        # A new or pending alarm needs the true start of the excursion (it may lie
        # before the look-back, e.g. when buffered readings arrive late): look further.
        needs_start = alarm is None or alarm.state == "pending"
        if not (needs_start and breach.all()) or lookback_us >= MAX_LOOKBACK_US:
            break
        lookback_us *= 4
    if breach[-1]:
        outside = np.flatnonzero(~breach)
        run = outside[-1] + 1 if len(outside) else 0
        run_values = values[run:]
        critical = bool(cond.breaches(rule, run_values, rule.limit).any())
        severity = "critical" if critical else "warning"
        worst = cond.worst(rule, run_values)
        since_us = int(ts[run])
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
            if alarm.state == "pending":
                alarm.started_at = from_us(since_us)
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
        if alarm.state == "pending" and ts[-1] - to_us(alarm.started_at) >= rule.delay_s * 1e6:
            fired_us = to_us(alarm.started_at) + int(rule.delay_s * 1e6)
            alarm.fired_at = from_us(fired_us)
            _transition(session, alarm, "firing", alarm.fired_at, now)
            changed = True
        if changed:
            alarm.updated_at = now
        return alarm if changed else None
    if alarm is None:
        return None
    clear = cond.cleared(rule, values, alarm_level)
    if alarm.state == "pending" or clear[-1]:
        # Resolution time: first reading of the final stretch that is back inside.
        not_clear = np.flatnonzero(~clear if clear[-1] else breach)
        first = not_clear[-1] + 1 if len(not_clear) else 0
        at = from_us(int(ts[min(first, len(ts) - 1)]))
        alarm.resolved_at = at
        comment = "cleared before its delay" if alarm.state == "pending" else "cleared"
        _transition(session, alarm, "resolved", at, now, comment=comment)
        return alarm
    return None


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


def list_alarms(
    session: Session, state: str | None = None, *, room: str | None = None
) -> list[Alarm]:
    """Alarms, newest first; ``state`` one of pending/firing/acknowledged/resolved/open."""
    query = sa.select(Alarm).order_by(Alarm.started_at.desc(), Alarm.id.desc())
    if state == "open":
        query = query.where(Alarm.state.in_(OPEN_STATES))
    elif state is not None:
        if state not in ALARM_STATES:
            raise InvalidAlarmRequest(
                f"unknown alarm state {state!r} (states: {', '.join(ALARM_STATES)}, open)"
            )
        query = query.where(Alarm.state == state)
    if room is not None:
        query = query.where(Alarm.room == room)
    return list(session.execute(query).scalars())


def get_alarm(session: Session, alarm_id: int) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise AlarmNotFound(f"no alarm with id {alarm_id}")
    return alarm


def acknowledge(
    session: Session, alarm_id: int, user: str, comment: str, *, now: datetime | None = None
) -> Alarm:
    """Acknowledge a firing alarm with a comment (who and why are kept in the history)."""
    from instrument_env.models import now_utc

    if not isinstance(comment, str) or not comment.strip():
        raise InvalidAlarmRequest("an acknowledgement needs a comment")
    if not user:
        raise InvalidAlarmRequest("an acknowledgement needs a user")
    alarm = get_alarm(session, alarm_id)
    if alarm.state != "firing":
        raise AlarmStateConflict(
            f"alarm {alarm_id} is {alarm.state}; only a firing alarm can be acknowledged"
        )
    now = now or now_utc()
    alarm.acknowledged_at = now
    alarm.acknowledged_by = user
    alarm.ack_comment = comment.strip()
    _transition(session, alarm, "acknowledged", now, now, actor=user, comment=comment.strip())
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


def pending_notifications(session: Session) -> list[Notification]:
    """Outbox entries not yet sent, oldest first."""
    return list(
        session.execute(
            sa.select(Notification)
            .where(Notification.sent_at.is_(None))
            .order_by(Notification.created_at, Notification.id)
        ).scalars()
    )
