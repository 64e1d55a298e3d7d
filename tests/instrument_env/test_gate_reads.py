"""The gate's fast reads (plain DB-API cursor, one read per channel) give the same data
as the SQLAlchemy queries they replace, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from instrument_env import conditions as cond
from instrument_env.gate import _channel_key, _channel_stats, evaluate_gate
from instrument_env.ingest import ingest_readings
from instrument_env.limits import rule_band_filter
from instrument_env.models import to_us
from instrument_env.sim import EnvSimulator, fault_at
from instrument_env.storage import channel_series_us, channel_values_us, driver_fetchall

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def krios_data(env_session, env_config):
    ac = fault_at("ac_failure", T0 + timedelta(hours=1), 15, room="krios-room", magnitude=3.0)
    vib = fault_at("vibration", T0 + timedelta(minutes=100), 5, room="krios-room", magnitude=10)
    sim = EnvSimulator(env_config, seed=7, rooms=["krios-room"])
    end = T0 + timedelta(hours=3)
    result = ingest_readings(
        env_session, sim.readings(T0, end, [ac, vib]), source="sim", config=env_config, now=end
    )
    assert result.rejected == []
    env_session.commit()
    return env_session


def _gated(env_config):
    return [r for r in env_config.rules_for_room("krios-room") if r.gate]


def test_channel_values_match_channel_series(krios_data, env_config):
    start, end = to_us(T0 + timedelta(minutes=50)), to_us(T0 + timedelta(minutes=130))
    checked = 0
    for sensor, quantity, band in [
        ("krios-t1", "temperature", None),
        ("krios-vib", "vibration", None),  # every band, several rows per time
        ("krios-vib", "vibration", "max"),
        ("krios-mag", "magnetic_field_dc", None),
        ("krios-t1", "temperature", "no-such-band"),
    ]:
        series = channel_series_us(krios_data, sensor, quantity, start, end, band=band)
        ts, values = channel_values_us(krios_data, sensor, quantity, start, end, band=band)
        assert ts.dtype == np.int64 and values.dtype == np.float64
        np.testing.assert_array_equal(ts, series.ts_us)
        np.testing.assert_array_equal(values, series.values)
        checked += len(ts)
    assert checked > 1000
    ts, values = channel_values_us(krios_data, "krios-t1", "temperature", end + 1, end + 2)
    assert len(ts) == 0 and len(values) == 0


@pytest.mark.parametrize("minutes", [55, 70, 104, 170])
def test_shared_channel_read_judges_like_a_read_per_rule(krios_data, env_config, minutes):
    at_us = to_us(T0 + timedelta(minutes=minutes))
    start_us = at_us - int(env_config.settling_window_s["krios-room"] * 1e6)
    for rule in _gated(env_config):
        alone = cond.judged_series(krios_data, rule, start_us, at_us)
        # a read reaching further back than this rule needs, as the gate shares it
        shared = channel_values_us(
            krios_data,
            rule.sensor,
            rule.quantity,
            start_us - 2 * 3600 * 1_000_000,
            at_us,
            band=rule_band_filter(rule),
        )
        judged = cond.judged_series(krios_data, rule, start_us, at_us, readings=shared)
        np.testing.assert_array_equal(judged.ts_us, alone.ts_us)
        np.testing.assert_array_equal(judged.values, alone.values)


def test_channel_stats_match_the_readings(krios_data, env_config):
    rules = _gated(env_config)
    at_us = to_us(T0 + timedelta(minutes=104))
    start_us = at_us - 3600 * 1_000_000
    stats = _channel_stats(krios_data, rules, start_us, at_us)
    for rule in rules:
        key = _channel_key(rule)
        back = max(cond.lookback_us(r) for r in rules if _channel_key(r) == key)
        series = channel_series_us(krios_data, *key[:2], start_us - back, at_us, band=key[2])
        inside = series.values[series.ts_us >= start_us]
        got = stats[key]
        assert (got.lo, got.hi) == (inside.min(), inside.max())
        assert (got.lo_ext, got.hi_ext) == (series.values.min(), series.values.max())
        assert got.newest == series.ts_us.max()
    # the vibration excursion and the temperature drift are refused, with reasons
    decision = evaluate_gate(krios_data, "krios1", T0 + timedelta(minutes=104), config=env_config)
    assert not decision.allowed
    assert any("krios-vib vibration: value" in r for r in decision.reasons), decision.reasons


def test_driver_errors_are_sqlalchemy_errors(database_url):
    from instrument_env.db import session_factory

    with session_factory(database_url)() as session:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            driver_fetchall(session, "SELECT ts_us FROM env_readings WHERE ts_us > :t", {"t": 0})
        assert "env_readings" in str(caught.value.orig)
        session.rollback()
        assert driver_fetchall(session, "SELECT :a + 1", {"a": 1}) == [(2,)]


def test_max_band_reads_use_the_partial_index(krios_data, env_config):
    """The statements a ``band: any`` rule runs name ``band = 'max'`` so the planner can
    use ``ix_env_readings_max_band`` (SQLite's plan is deterministic; PostgreSQL's depends
    on table statistics, so there only the rows are checked, above)."""
    from instrument_env import gate as gate_module
    from instrument_env import storage

    rules = [r for r in _gated(env_config) if rule_band_filter(r) == "max"]
    assert rules, "the Krios room has a vibration rule over every band"
    at = to_us(T0 + timedelta(hours=2))
    gate_module._STATS_SQL.clear()
    _channel_stats(krios_data, rules, at - 3_600_000_000, at)
    stats_sql = next(iter(gate_module._STATS_SQL.values()))[0]
    values_sql = storage._VALUES_SQL.format(band=storage.band_condition("max", "band")[0])
    for sql in (stats_sql, values_sql):
        assert "band = 'max'" in sql and ":b" not in sql
    if krios_data.get_bind().dialect.name != "sqlite":
        return
    params = {"s0": "krios-vib", "q0": "vibration", "from0": 0, "at": at, "start": 0, "w0": 1}
    params |= {"sensor": "krios-vib", "quantity": "vibration", "end": at}
    for sql in (stats_sql, values_sql):
        plan = krios_data.execute(sa.text("EXPLAIN QUERY PLAN " + sql), params).all()
        assert any("ix_env_readings_max_band" in str(row) for row in plan), plan


def test_gate_leaves_the_parallel_setting_as_it_was(krios_data, env_config):
    """The gate turns PostgreSQL's parallel plans off for its own reads only."""
    if krios_data.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL setting")
    show = sa.text("SHOW max_parallel_workers_per_gather")
    before = krios_data.execute(show).scalar()
    decision = evaluate_gate(krios_data, "krios1", T0 + timedelta(hours=3), config=env_config)
    assert decision.reasons is not None
    assert krios_data.execute(show).scalar() == before
