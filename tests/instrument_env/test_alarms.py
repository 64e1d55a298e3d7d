"""Alarm state machine driven by the simulator through an air-conditioning failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from instrument_env import alarms
from instrument_env.ingest import ingest_readings
from instrument_env.models import Notification, from_us, to_us
from instrument_env.sim import EnvSimulator, Fault, fault_at

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
RULE = "krios-temp-high"  # warning 21.0 °C, limit 22.0 °C, hysteresis 0.2 °C, delay 120 s


def feed(session, config, start, end, faults, **kw):
    sim = EnvSimulator(config, seed=3, rooms=["krios-room"], **kw)
    readings = sim.readings(start, end, faults)
    result = ingest_readings(session, readings, source="sim", config=config, now=end)
    assert result.rejected == []
    session.commit()
    return readings


def temperature(readings, sensor="krios-t1"):
    rows = [r for r in readings if r["sensor"] == sensor and r["quantity"] == "temperature"]
    ts = np.array([to_us(datetime.fromisoformat(r["ts"])) for r in rows])
    return ts, np.array([r["value"] for r in rows])


def only(session, rule_id, state=None):
    found = [a for a in alarms.list_alarms(session, state) if a.rule_id == rule_id]
    assert len(found) <= 1, [a.to_dict() for a in found]
    return found[0] if found else None


def test_fires_after_delay_clears_past_hysteresis_escalates(env_session, env_config):
    fault = fault_at("ac_failure", T0 + timedelta(minutes=30), 40, room="krios-room", magnitude=4.0)
    readings = feed(env_session, env_config, T0, T0 + timedelta(hours=3), [fault], noise=0.0)
    ts, temp = temperature(readings)
    assert temp.max() > 22.2
    cross = int(ts[np.argmax(temp > 21.0)])  # first reading above the warning level
    crit = int(ts[np.argmax(temp > 22.0)])
    down = np.flatnonzero((temp <= 21.0) & (ts > crit))[0]  # back under 21.0 ...
    clear = np.flatnonzero((temp <= 20.8) & (ts > crit))[0]  # ... and past hysteresis
    assert ts[clear] - ts[down] > 120e6  # the hysteresis band takes minutes to cross

    def at(t_us):
        alarms.evaluate(env_session, from_us(int(t_us)), env_config)
        env_session.commit()
        return only(env_session, RULE)

    assert at(cross - 10e6) is None
    pending = at(cross + 60e6)
    assert pending.state == "pending" and pending.started_at == from_us(cross)
    assert at(cross + 110e6).state == "pending"  # 110 s < delay 120 s
    firing = at(cross + 130e6)
    assert firing.state == "firing" and firing.severity == "warning"
    assert firing.fired_at == from_us(cross + 120_000_000)
    assert at(crit + 10e6).severity == "critical"
    # unacknowledged for 15 min after firing -> escalated once, with a notification
    escalate_at = cross + 120e6 + 900e6
    assert at(escalate_at - 20e6).escalated_at is None
    escalated = at(escalate_at + 20e6)
    assert escalated.escalated_at == from_us(int(escalate_at + 20e6))
    notes = env_session.query(Notification).filter_by(alarm_id=escalated.id).all()
    assert len(notes) == 1 and notes[0].recipient == env_config.escalate_to["krios-room"]
    at(escalate_at + 80e6)
    assert env_session.query(Notification).filter_by(alarm_id=escalated.id).count() == 1
    # inside the hysteresis band: still firing, and no second alarm
    assert escalate_at + 80e6 < ts[down]
    assert at(ts[down] + 30e6).state == "firing"
    # past hysteresis, but not yet for a whole delay_s (120 s): still firing
    assert at(ts[clear] + 15e6).state == "firing"
    # past hysteresis for delay_s: resolved at the first reading back inside
    resolved = at(ts[clear] + 135e6)
    assert resolved.state == "resolved" and resolved.resolved_at == from_us(int(ts[clear]))
    history = [(e.from_state, e.to_state) for e in alarms.alarm_history(env_session, resolved.id)]
    assert history == [
        (None, "pending"),
        ("pending", "firing"),
        ("firing", "firing"),  # escalation
        ("firing", "resolved"),
    ]
    assert RULE not in {a.rule_id for a in alarms.list_alarms(env_session, "open")}


def test_short_excursion_never_fires_and_ack_stops_escalation(env_session, env_config):
    # a door opening: vibration ×5 for 40 s (< 60 s delay of krios-vibration)
    door = fault_at("door_open", T0 + timedelta(minutes=20), 40 / 60, room="krios-room")
    ac = fault_at("ac_failure", T0 + timedelta(minutes=40), 30, room="krios-room", magnitude=3.0)
    feed(env_session, env_config, T0, T0 + timedelta(hours=2), [door, ac], noise=0.0)
    for minute in range(18, 80):
        alarms.evaluate(env_session, T0 + timedelta(minutes=minute, seconds=5), env_config)
        env_session.commit()
        if minute == 22:  # door closed at 20:40; every reading clear for 60 s since
            vib = only(env_session, "krios-vibration")
            assert vib is not None and vib.state == "resolved" and vib.fired_at is None
        drift = only(env_session, "krios-temp-drift", "firing")
        if drift is not None:
            alarms.acknowledge(env_session, drift.id, "tech1", "AC engineer called")
            env_session.commit()
    drift = only(env_session, "krios-temp-drift")
    assert drift.state == "acknowledged" and drift.acknowledged_by == "tech1"
    assert drift.escalated_at is None  # acknowledged before escalate_after_s
    with pytest.raises(alarms.AlarmStateConflict):
        alarms.acknowledge(env_session, drift.id, "tech2", "again")
    with pytest.raises(alarms.InvalidAlarmRequest):
        alarms.acknowledge(env_session, drift.id, "tech2", "  ")
    with pytest.raises(alarms.AlarmNotFound):
        alarms.acknowledge(env_session, 99999, "tech2", "x")
    with pytest.raises(alarms.InvalidAlarmRequest):
        alarms.list_alarms(env_session, "sleeping")


def test_noise_around_threshold_gives_one_alarm(env_session, env_config):
    # temperature held just around the warning level: noisy crossings, one alarm
    fault = Fault("ac_failure", T0, T0 + timedelta(minutes=20), room="krios-room", magnitude=3.0)
    feed(env_session, env_config, T0, T0 + timedelta(minutes=50), [fault], noise=1.0)
    for minute in range(0, 50):
        alarms.evaluate(env_session, T0 + timedelta(minutes=minute), env_config)
    env_session.commit()
    drift = [a for a in alarms.list_alarms(env_session) if a.rule_id == "krios-temp-drift"]
    assert len(drift) == 1 and drift[0].state == "firing"


def test_silent_sensor_alarm(env_session, env_config):
    silent = fault_at("sensor_silent", T0 + timedelta(minutes=10), 10, sensor="krios-mag")
    feed(env_session, env_config, T0, T0 + timedelta(minutes=30), [silent])
    alarms.evaluate(env_session, T0 + timedelta(minutes=11), env_config)
    assert only(env_session, "stale:krios-mag") is None  # 60 s < stale_after_s 120 s
    alarms.evaluate(env_session, T0 + timedelta(minutes=13), env_config)
    stale = only(env_session, "stale:krios-mag")
    assert stale.state == "firing" and stale.severity == "critical"
    assert "krios-mag silent" in stale.message
    alarms.evaluate(env_session, T0 + timedelta(minutes=21), env_config)
    assert only(env_session, "stale:krios-mag").state == "resolved"
    # sensors of the other rooms never reported: no-data alarms for them too
    assert only(env_session, "stale:screen-t1").state == "firing"


def test_late_buffered_readings_are_judged_by_their_timestamps(env_session, env_config):
    """A logger loses its network, buffers, then delivers late and out of order."""
    ac = fault_at("ac_failure", T0 + timedelta(minutes=20), 30, room="krios-room", magnitude=6.0)
    sim = EnvSimulator(env_config, seed=4, rooms=["krios-room"], noise=0.0)
    readings = sim.readings(T0, T0 + timedelta(minutes=60), [ac])
    cut = (T0 + timedelta(minutes=15)).isoformat()
    on_time = [r for r in readings if r["ts"] < cut or r["sensor"] != "krios-t1"]
    buffered = [r for r in readings if r["ts"] >= cut and r["sensor"] == "krios-t1"]
    ingest_readings(
        env_session, on_time, source="sim", config=env_config, now=T0 + timedelta(hours=1)
    )
    env_session.commit()
    alarms.evaluate(env_session, T0 + timedelta(minutes=40), env_config)
    env_session.commit()
    assert only(env_session, "stale:krios-t1").state == "firing"
    assert only(env_session, RULE) is None  # nothing known about the excursion yet
    # the buffer arrives, newest first
    ingest_readings(
        env_session, buffered[::-1], source="sim", config=env_config, now=T0 + timedelta(hours=1)
    )
    env_session.commit()
    alarms.evaluate(env_session, T0 + timedelta(minutes=41), env_config)
    env_session.commit()
    assert only(env_session, "stale:krios-t1").state == "resolved"
    ts, temp = temperature(readings)
    cross = int(ts[np.argmax(temp > 21.0)])
    alarm = only(env_session, RULE)
    assert alarm.state == "firing"
    assert alarm.started_at == from_us(cross)
    assert alarm.fired_at == from_us(cross + 120_000_000)
