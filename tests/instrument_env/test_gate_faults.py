"""The gate on rooms it has not seen, on broken or changed limits, and the reasons it
gives as of the time judged (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cryofac.config import PACKAGE_DIR, read_yaml, validate
from cryofac.errors import ConfigError
from instrument_env import alarms
from instrument_env.gate import evaluate_gate, record_override
from instrument_env.ingest import ingest_readings
from instrument_env.limits import Coverage, load_env_config
from instrument_env.models import Alarm, to_us
from instrument_env.provenance import summarize
from instrument_env.sim import EnvSimulator, fault_at

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def feed(session, config, start, end, faults=()):
    sim = EnvSimulator(config, seed=7, rooms=["krios-room"])
    result = ingest_readings(
        session, sim.readings(start, end, list(faults)), source="sim", config=config, now=end
    )
    assert result.rejected == []
    session.commit()


def test_sensors_back_for_a_minute_after_three_days_silent_refuse(env_session, env_config):
    back = T0 + timedelta(days=3)
    feed(env_session, env_config, T0 - timedelta(hours=1), T0)  # the last hour before
    feed(env_session, env_config, back, back + timedelta(seconds=60))  # back for 60 s
    at = back + timedelta(seconds=60)
    decision = evaluate_gate(env_session, "krios1", at, config=env_config)
    assert not decision.allowed
    channels = {r.split(":")[0] for r in decision.reasons if "settling window (" in r}
    assert channels == {
        "krios-t1 temperature",
        "krios-t1 humidity",
        "krios-t2 temperature",
        "krios-mag magnetic_field_ac",
        "krios-mag magnetic_field_dc",
        "krios-vib vibration (all 20 bands)",
    }
    text = next(r for r in decision.reasons if r.startswith("krios-t2 temperature"))
    assert text == (
        "krios-t2 temperature: 1 min of the 60 min settling window (2026-03-04T23:01:00+00:00 "
        "to 2026-03-05T00:01:00+00:00) covered, longest gap 59 min (2026-03-04T23:01:00+00:00 "
        "to 2026-03-05T00:00:00+00:00, allowed 1 min); 6 of 360 expected readings every "
        "10 s (2%, 80% needed)"
    )
    # the coverage option changes the decision: a room that needs only 1 % and 1 h gaps
    lax = replace(
        env_config,
        coverage={"krios-room": Coverage(max_gap_intervals=400, min_fraction=0.01)},
    )
    assert evaluate_gate(env_session, "krios1", at, config=lax).allowed


def test_fifty_minute_hole_in_the_settling_window_refuses(env_session, env_config):
    hole = fault_at("sensor_silent", T0 + timedelta(minutes=5), 50, room="krios-room")
    feed(env_session, env_config, T0 - timedelta(hours=2), T0 + timedelta(hours=1), [hole])
    at = T0 + timedelta(hours=1)
    decision = evaluate_gate(env_session, "krios1", at, config=env_config)
    assert not decision.allowed
    assert all("settling window (" in r for r in decision.reasons), decision.reasons
    assert all("longest gap 50 min 10 s" in r for r in decision.reasons)  # 3000-3010 s
    # the provenance of that hour records the same coverage, and the gate override
    record_override(env_session, "krios1", "staff1", "FSE says the room is fine", decision, at=at)
    env_session.commit()
    summary = summarize(env_session, "krios1", T0, at, config=env_config)
    assert summary["covered"] is False
    t1 = next(c for c in summary["coverage"] if c["sensor"] == "krios-t1")
    assert t1["expected"] == 360 and t1["received"] < 70 and len(t1["gaps"]) == 1
    # in time, in the gate's words: 10 min of the hour covered, one 50 min 10 s gap
    assert t1["window_s"] == 3600 and t1["covered_s"] == 3600 - t1["longest_gap_s"]
    assert t1["longest_gap_s"] == 3010 and t1["covered"] is False
    assert t1["summary"].startswith(
        "krios-t1 temperature: 9 min 50 s of the 60 min acquisition (2026-03-02T00:00:00+00:00 "
        "to 2026-03-02T01:00:00+00:00) covered, longest gap 50 min 10 s"
    )
    assert summary["gate_overrides"][0]["reason"] == "FSE says the room is fine"


def test_alarm_reason_says_the_state_at_the_time_judged(env_session, env_config):
    vib = fault_at("vibration", T0 + timedelta(minutes=70), 10, room="krios-room", magnitude=10)
    feed(env_session, env_config, T0, T0 + timedelta(hours=2), [vib])
    for minute in range(60, 120):
        alarms.evaluate(env_session, T0 + timedelta(minutes=minute), env_config)
    env_session.commit()
    alarm = env_session.execute(
        sa.select(Alarm).where(Alarm.rule_id == "krios-vibration")
    ).scalar_one()
    assert alarm.state == "resolved" and alarm.severity == "critical"
    during = alarm.fired_at + (alarm.resolved_at - alarm.fired_at) / 2
    decision = evaluate_gate(env_session, "krios1", during, config=env_config)
    text = next(r for r in decision.reasons if r.startswith("critical alarm"))
    assert f"firing at {during.isoformat(timespec='seconds')}" in text
    assert "resolved" not in text


def test_nan_infinite_and_missing_limits_are_refused():
    limits = read_yaml(PACKAGE_DIR / "limits.yaml")
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = {**limits, "rooms": {**limits["rooms"]}}
        room = dict(limits["rooms"]["krios-room"])
        room["rules"] = [dict(r) for r in room["rules"]]
        room["rules"][0]["limit"] = bad
        broken["rooms"]["krios-room"] = room
        with pytest.raises(ConfigError, match=r"rules\[0\]\.limit: .* is not a finite number"):
            validate("limits", broken, "limits.yaml")
    room["rules"][0].pop("limit")
    with pytest.raises(ConfigError, match=r"rules\[0\]\.limit: required key is missing"):
        validate("limits", broken, "limits.yaml")


def test_gate_reads_the_current_limits_and_refuses_on_a_broken_file(
    env_session, env_config, tmp_path
):
    directory = tmp_path / "config"
    shutil.copytree(PACKAGE_DIR, directory, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    feed(env_session, env_config, T0 - timedelta(hours=1), T0)
    config = load_env_config(directory)
    assert evaluate_gate(env_session, "krios1", T0, config=config).allowed
    limits = directory / "limits.yaml"
    text = limits.read_text()
    # tightened in place (the same size would hide nothing: mtime and size both change)
    limits.write_text(text.replace("warning: 21.0, limit: 22.0", "warning: 10.0, limit: 11.0"))
    tightened = evaluate_gate(env_session, "krios1", T0, config=load_env_config(directory))
    assert not tightened.allowed and any("limit 11 °C" in r for r in tightened.reasons)
    limits.write_text(text.replace("limit: 22.0", "limit: .nan"))
    with pytest.raises(ConfigError, match="is not a finite number"):
        load_env_config(directory)
    # through the default configuration directory: refused, undecided, with the reason
    import os

    os.environ["CRYOFAC_CONFIG_DIR"] = str(directory)
    try:
        broken = evaluate_gate(env_session, "krios1", T0)
    finally:
        del os.environ["CRYOFAC_CONFIG_DIR"]
    assert not broken.allowed and broken.decided is False
    assert broken.reasons[0].startswith("configuration cannot be read: ")
    assert "limit: nan is not a finite number" in broken.reasons[0]


def test_vibration_coverage_is_judged_band_by_band(env_session, env_config):
    """19 of 20 bands implausible (a logger's no-value code) for the whole hour: the
    one good band must not cover the sensor; the bands are named."""
    end = T0 + timedelta(hours=1)
    sim = EnvSimulator(env_config, seed=7, rooms=["krios-room"])
    readings = sim.readings(T0 - timedelta(minutes=10), end, [])
    for reading in readings:
        if reading["quantity"] == "vibration" and reading.get("band") != "12.5":
            reading["value"] = -9999.0
    result = ingest_readings(env_session, readings, source="sim", config=env_config, now=end)
    assert len(result.rejected) == 19 * 420  # 70 min of 10 s readings, 19 bands
    env_session.commit()
    decision = evaluate_gate(env_session, "krios1", end, config=env_config)
    assert not decision.allowed
    assert decision.reasons == [
        "krios-vib vibration: 19 of 20 bands without a plausible reading in the 60 min "
        "settling window (2026-03-02T00:00:00+00:00 to 2026-03-02T01:00:00+00:00): 1, 1.25, "
        "1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8, 10, 16, 20, 25, 31.5, 40, 50, 63, 80 Hz (each band "
        "must be covered)"
    ]
    # without the bands in the configuration the one good band "covers" the sensor
    assert evaluate_gate(env_session, "krios1", end, config=replace(env_config, bands={})).allowed
    # the acquisition's provenance judges band by band too
    summary = summarize(env_session, "krios1", T0, end, config=env_config)
    vib = [c for c in summary["coverage"] if c["sensor"] == "krios-vib"]
    assert len(vib) == 20 and summary["covered"] is False
    assert [c["band"] for c in vib if c["covered"]] == ["12.5"]


def test_band_labels_per_time_prove_coverage_only_for_the_configured_bands(env_session, env_config):
    """The per-time band labels kept at ingest prove every configured band present only
    when they are exactly the configured bands; a band configured after the readings
    were stored (never sent) refuses, an extra stored band goes to the exact count."""
    from instrument_env.gate import _every_band_at_every_time

    end = T0 + timedelta(hours=1)
    feed(env_session, env_config, T0 - timedelta(minutes=10), end)
    bands = env_config.bands["vibration"]
    rule = next(
        r for r in env_config.rules_for_room("krios-room") if r.gate and r.quantity == "vibration"
    )
    start_us, end_us = to_us(T0), to_us(end)
    times = 360  # every 10 s
    assert _every_band_at_every_time(env_session, rule, bands, times, start_us, end_us)
    assert not _every_band_at_every_time(env_session, rule, bands, times + 1, start_us, end_us)
    assert not _every_band_at_every_time(env_session, rule, bands[1:], times, start_us, end_us)
    assert evaluate_gate(env_session, "krios1", end, config=env_config).allowed
    fewer = replace(env_config, bands={**env_config.bands, "vibration": bands[1:]})
    assert evaluate_gate(env_session, "krios1", end, config=fewer).allowed
    more = replace(env_config, bands={**env_config.bands, "vibration": (*bands, "100")})
    decision = evaluate_gate(env_session, "krios1", end, config=more)
    assert not decision.allowed
    assert decision.reasons[0].startswith("krios-vib vibration: 1 of 21 bands without")
    assert decision.reasons[0].endswith(": 100 Hz (each band must be covered)")
