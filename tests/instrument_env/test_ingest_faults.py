"""Fault injection at ingest: impossible values, control characters, conflicting
duplicates, wrong clocks, readings a sensor cannot make (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from instrument_env import alarms
from instrument_env.gate import evaluate_gate
from instrument_env.ingest import ingest_readings
from instrument_env.limits import IngestOptions
from instrument_env.models import Alarm, RejectedReading, to_us
from instrument_env.sim import EnvSimulator
from tests.instrument_env.stored import channel_series

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def reading(sensor, quantity, value, ts, unit, band=None):
    out = {"sensor": sensor, "quantity": quantity, "ts": ts.isoformat(), "value": value}
    out["unit"] = unit
    if band is not None:
        out["band"] = band
    return out


def rejected_rows(session, kind=None):
    query = sa.select(RejectedReading).order_by(RejectedReading.id)
    if kind is not None:
        query = query.where(RejectedReading.kind == kind)
    return list(session.execute(query).scalars())


def test_implausible_values_are_kept_outside_the_series_and_count_as_missing(
    env_session, env_config
):
    # an hour of good readings, then 'no value' codes and impossible values
    sim = EnvSimulator(env_config, seed=1, rooms=["krios-room"])
    now = T0 + timedelta(hours=2)
    good = sim.readings(T0, T0 + timedelta(hours=1))
    assert ingest_readings(env_session, good, source="sim", now=now).rejected == []
    bad = []
    for k in range(360):  # the next hour: humidity and AC field report -9999
        ts = T0 + timedelta(hours=1, seconds=10 * k)
        bad.append(reading("krios-t1", "humidity", -9999, ts, "%RH"))
        bad.append(reading("krios-mag", "magnetic_field_ac", -9999.0, ts, "nT"))
    bad.append(reading("krios-t1", "temperature", -300.0, T0 + timedelta(hours=1), "°C"))
    bad.append(reading("krios-vib", "vibration", -9999, T0 + timedelta(hours=1), "µm/s", 8))
    result = ingest_readings(env_session, bad, source="logger", now=now)
    env_session.commit()
    assert result.accepted == 0 and len(result.rejected) == len(bad)
    assert {r["kind"] for r in result.rejected} == {"implausible"}
    assert (
        "value -9999 is a logger's no-value code for humidity (%RH)"
        in (result.rejected[0]["reason"])
    )
    assert "below the plausible minimum -40" in result.rejected[-2]["reason"]
    kept = rejected_rows(env_session, "implausible")
    assert len(kept) == len(bad) and kept[0].value == -9999 and kept[0].sensor == "krios-t1"
    humidity = channel_series(env_session, "krios-t1", "humidity", T0, now)
    assert len(humidity) == 360 and humidity.values.min() > 0  # only the good hour
    # the gate treats the implausible hour as missing data: silent sensor channels
    decision = evaluate_gate(env_session, "krios1", T0 + timedelta(hours=1, minutes=59))
    assert not decision.allowed
    assert any("krios-mag magnetic_field_ac: sensor silent" in r for r in decision.reasons)
    assert any("krios-t1 humidity: sensor silent" in r for r in decision.reasons)


def test_control_characters_refused_per_reading_and_ingest_goes_on(env_session):
    now = T0 + timedelta(minutes=30)
    batch = [
        reading("krios-t1", "temperature", 20.0, T0 + timedelta(seconds=10 * k), "°C")
        for k in range(100)
    ]
    batch.insert(50, reading("krios-vib", "vibration", 1.0, T0, "µm/s", band="8\u0000"))
    batch.insert(0, reading("krios-t1\u0000", "temperature", 20.0, T0, "°C"))
    first = ingest_readings(env_session, batch, source="api:x\x00", now=now)
    env_session.commit()
    assert first.accepted == 100
    assert [(r["index"], r["kind"]) for r in first.rejected] == [(0, "invalid"), (51, "invalid")]
    assert "control character" in first.rejected[1]["reason"]
    later = [reading("krios-t1", "temperature", 20.5, T0 + timedelta(seconds=1001), "°C")]
    assert ingest_readings(env_session, later, source="api", now=now).accepted == 1
    env_session.commit()
    assert len(channel_series(env_session, "krios-t1", "temperature", T0, now)) == 101
    kept = rejected_rows(env_session)
    assert len(kept) == 2 and all("\x00" not in k.payload + k.sensor + k.band for k in kept)


def test_reading_of_a_quantity_the_sensor_does_not_measure_is_rejected(env_session):
    now = T0 + timedelta(minutes=1)
    raw = {
        "sensor": "krios-t1",
        "quantity": "magnetic_field",
        "ts": T0.isoformat(),
        "unit": "nT",
        "raw": {"sample_rate_Hz": 1000, "samples": [[1.0, 2.0, 3.0]] * 1000},
    }
    plain = reading("krios-t1", "magnetic_field_ac", 20.0, T0, "nT")
    result = ingest_readings(env_session, [raw, plain], source="t", now=now)
    assert result.accepted == 0
    assert [r["index"] for r in result.rejected] == [0, 1]
    assert (
        "does not report anything derived from raw 'magnetic_field'"
        in (result.rejected[0]["reason"])
    )
    assert "does not report 'magnetic_field_ac'" in result.rejected[1]["reason"]


def test_conflicting_duplicate_is_refused_counted_alarmed_and_closes_the_gate(
    env_session, env_config
):
    sim = EnvSimulator(env_config, seed=2, rooms=["krios-room"])
    now = T0 + timedelta(hours=2)
    readings = sim.readings(T0, now)
    assert ingest_readings(env_session, readings, source="sim", now=now).rejected == []
    env_session.commit()
    assert evaluate_gate(env_session, "krios1", now).allowed
    # the same readings again: idempotent
    again = ingest_readings(env_session, readings[:500], source="sim", now=now)
    assert again.accepted == 500 and again.rejected == [] and again.conflicts == 0
    # a second publisher: same sensor and times, other values (a 26 °C excursion)
    temps = [r for r in readings if r["sensor"] == "krios-t1" and r["quantity"] == "temperature"]
    other = [{**r, "value": 26.0} for r in temps[-30:]]
    result = ingest_readings(env_session, other, source="second", now=now)
    env_session.commit()
    assert result.accepted == 0 and result.conflicts == 30
    assert {r["kind"] for r in result.rejected} == {"conflict"}
    assert "stored value" in result.rejected[0]["reason"] and "26" in result.rejected[0]["reason"]
    assert len(rejected_rows(env_session, "conflict")) == 30
    stored = channel_series(env_session, "krios-t1", "temperature", T0, now)
    assert stored.values.max() < 26.0  # the stored series is unchanged
    alarm = env_session.execute(sa.select(Alarm).where(Alarm.kind == "conflict")).scalar_one()
    assert alarm.rule_id == "conflict:krios-t1" and alarm.state == "firing"
    assert "30 reading(s) refused as conflicts" in alarm.message
    decision = evaluate_gate(env_session, "krios1", now)
    assert not decision.allowed
    assert any("krios-t1: 30 reading(s)" in r and "conflict" in r for r in decision.reasons)
    # more conflicts add to the same open alarm; an acknowledgement resolves it
    ingest_readings(env_session, [{**temps[0], "value": 30.0}], source="second", now=now)
    env_session.commit()
    alarm = env_session.get(Alarm, alarm.id)
    assert "31 reading(s)" in alarm.message
    acked = alarms.acknowledge(env_session, alarm.id, "tech", "second logger unplugged", now=now)
    assert acked.state == "resolved" and acked.acknowledged_by == "tech"


def test_clock_bounds_refuse_future_and_ancient_readings(env_session, env_config):
    now = T0 + timedelta(hours=1)
    batch = [
        reading("krios-t1", "temperature", 20.0, now + timedelta(seconds=4), "°C"),
        reading("krios-t1", "temperature", 26.0, now + timedelta(seconds=60), "°C"),
        reading("krios-t1", "temperature", 20.0, datetime(1970, 1, 1, tzinfo=UTC), "°C"),
        reading("krios-t1", "temperature", 20.0, now - timedelta(days=500), "°C"),
    ]
    result = ingest_readings(env_session, batch, source="t", config=env_config, now=now)
    assert result.accepted == 1
    assert [(r["index"], r["kind"]) for r in result.rejected] == [
        (1, "clock"),
        (2, "clock"),
        (3, "clock"),
    ]
    assert "in the future" in result.rejected[0]["reason"]
    assert "implausibly old" in result.rejected[1]["reason"]
    # the option changes it: a facility with 10 min of skew allowance takes the 60 s one
    lax = replace(env_config, ingest=IngestOptions(max_future_s=600, max_age_days=1000))
    result = ingest_readings(env_session, batch, source="t", config=lax, now=now)
    assert result.accepted == 3 and [r["index"] for r in result.rejected] == [2]


def test_good_values_posted_ahead_cannot_mask_a_real_excursion(env_session, env_config):
    """Values sent ahead of time are refused, so the real excursion is stored."""
    sim = EnvSimulator(env_config, seed=3, rooms=["krios-room"])
    now = T0 + timedelta(hours=2)
    assert ingest_readings(env_session, sim.readings(T0, now), source="sim", now=now).accepted
    ahead = [
        reading("krios-t1", "temperature", 20.0, now + timedelta(seconds=10 * k), "°C")
        for k in range(1, 60)
    ]
    masked = ingest_readings(env_session, ahead, source="liar", now=now)
    assert masked.accepted == 0 and {r["kind"] for r in masked.rejected} == {"clock"}
    later = now + timedelta(minutes=10)
    real = [
        reading("krios-t1", "temperature", 26.0, now + timedelta(seconds=10 * k), "°C")
        for k in range(1, 60)
    ]
    assert ingest_readings(env_session, real, source="logger", now=later).accepted == 59
    env_session.commit()
    decision = evaluate_gate(env_session, "krios1", later)
    assert not decision.allowed
    assert any("krios-t1 temperature: value 26" in r for r in decision.reasons)
    assert to_us(later) > to_us(now)
