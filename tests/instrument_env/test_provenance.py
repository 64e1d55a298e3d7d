"""Provenance numbers are checked against the simulated readings themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from instrument_env import alarms
from instrument_env.ingest import ingest_readings
from instrument_env.provenance import summarize, write_provenance
from instrument_env.sim import EnvSimulator, fault_at

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def test_provenance_matches_readings(env_session, env_config, tmp_path):
    ac = fault_at("ac_failure", T0 + timedelta(minutes=30), 30, room="krios-room", magnitude=5.0)
    silent = fault_at("sensor_silent", T0 + timedelta(minutes=100), 10, sensor="krios-t1")
    sim = EnvSimulator(env_config, seed=9, rooms=["krios-room"])
    readings = sim.readings(T0, T0 + timedelta(hours=2), [ac, silent])
    ingest_readings(
        env_session, readings, source="sim", config=env_config, now=T0 + timedelta(hours=2)
    )
    alarms.evaluate(env_session, T0 + timedelta(minutes=58), env_config)
    env_session.commit()
    start, end = T0 + timedelta(minutes=20), T0 + timedelta(minutes=110)
    summary = write_provenance(
        tmp_path / "env.json", env_session, "krios1", start, end, config=env_config
    )
    assert json.loads((tmp_path / "env.json").read_text()) == summary
    assert summary["room"] == "krios-room" and summary["instrument"] == "krios1"

    def in_window(r):
        ts = datetime.fromisoformat(r["ts"])
        return start <= ts <= end

    chosen = [r for r in readings if in_window(r)]
    by_channel = {}
    for r in chosen:
        by_channel.setdefault((r["sensor"], r["quantity"], r.get("band", "")), []).append(r)
    for r in chosen:  # the derived per-time maximum over vibration bands
        if r.get("band"):
            key = (r["sensor"], r["quantity"], "max", r["ts"])
            by_channel.setdefault(key, []).append(r)
    for key in [k for k in by_channel if len(k) == 4]:
        top = max(by_channel.pop(key), key=lambda r: r["value"])
        by_channel.setdefault(key[:3], []).append(top)
    assert len(summary["channels"]) == len(by_channel)
    for ch in summary["channels"]:
        values = np.array(
            [r["value"] for r in by_channel[(ch["sensor"], ch["quantity"], ch.get("band", ""))]]
        )
        assert ch["n"] == len(values)
        assert ch["min"] == pytest.approx(values.min())
        assert ch["max"] == pytest.approx(values.max())
        assert ch["mean"] == pytest.approx(values.mean())

    # time above the 22.0 °C limit, from the readings: each 10 s reading holds until
    # the next (capped at stale_after_s 120 s, so the silent gap does not count)
    temp = [r for r in chosen if r["sensor"] == "krios-t1" and r["quantity"] == "temperature"]
    ts = np.array([datetime.fromisoformat(r["ts"]).timestamp() for r in temp])
    v = np.array([r["value"] for r in temp])
    held = np.minimum(np.minimum(np.append(ts[1:], end.timestamp()), end.timestamp()) - ts, 120)
    expected = held[v > 22.0].sum()
    rule = {r["rule"]: r for r in summary["rules"]}["krios-temp-high"]
    assert expected > 300  # the fault really crossed the limit for minutes
    assert rule["time_out_of_limits_s"] == pytest.approx(expected)
    assert rule["time_beyond_warning_s"] == pytest.approx(held[v > 21.0].sum())
    assert rule["worst"] == pytest.approx(v.max())
    assert len(rule["excursions"]) == 1
    assert summary["in_limits"] is False
    assert {a["rule_id"] for a in summary["alarms"]} >= {"krios-temp-high", "krios-temp-drift"}

    quiet = summarize(env_session, "krios-room", T0, T0 + timedelta(minutes=25), config=env_config)
    assert quiet["in_limits"] is True and quiet["instrument"] is None
    assert all(r["excursions"] == [] for r in quiet["rules"] if r["gate"])
