"""Gate decisions driven by the simulator: out-of-limit periods, silent sensors, settling."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from instrument_env import alarms
from instrument_env.conditions import judged_series
from instrument_env.gate import InvalidOverride, evaluate_gate, record_override
from instrument_env.ingest import ingest_readings
from instrument_env.limits import UnknownInstrument
from instrument_env.models import from_us, to_us
from instrument_env.sim import EnvSimulator, fault_at

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def feed(session, config, start, end, faults=(), **kw):
    sim = EnvSimulator(config, seed=5, rooms=["krios-room"], **kw)
    result = ingest_readings(
        session, sim.readings(start, end, faults), source="sim", config=config, now=end
    )
    assert result.rejected == []
    session.commit()


def test_refuses_during_excursion_and_allows_after_settling(env_session, env_config):
    ac = fault_at("ac_failure", T0 + timedelta(hours=1), 15, room="krios-room", magnitude=3.0)
    feed(env_session, env_config, T0, T0 + timedelta(hours=5), [ac])
    # 55 min of data for a 60 min settling window: not covered, refused, saying how much
    unseen = evaluate_gate(env_session, "krios1", T0 + timedelta(minutes=55), config=env_config)
    assert not unseen.allowed
    assert unseen.reasons[0] == (
        "krios-t1 temperature: 55 min of the 60 min settling window "
        "(2026-03-01T23:55:00+00:00 to 2026-03-02T00:55:00+00:00) covered, longest gap "
        "5 min (2026-03-01T23:55:00+00:00 to 2026-03-02T00:00:00+00:00, allowed 1 min); "
        "331 of 360 expected readings every 10 s (92%, 80% needed)"
    ), unseen.reasons
    assert all("55 min of the 60 min settling window" in r for r in unseen.reasons)
    during = evaluate_gate(env_session, "krios1", T0 + timedelta(minutes=70), config=env_config)
    assert not during.allowed
    assert any(
        "krios-t1 temperature change over 3600 s" in r
        and "limit 0.3 °C" in r
        and "still out of limits" in r
        for r in during.reasons
    ), during.reasons
    # when does the room come back into limits? judge every gated rule on the data
    last_bad = 0
    for rule in env_config.rules_for_room("krios-room"):
        if rule.gate:
            judged = judged_series(env_session, rule, to_us(T0), to_us(T0 + timedelta(hours=5)))
            bad = (
                judged.ts_us[judged.values > rule.limit]
                if rule.kind != "low"
                else judged.ts_us[judged.values < rule.limit]
            )
            last_bad = max(last_bad, int(bad.max()) if len(bad) else 0)
    assert last_bad > to_us(T0 + timedelta(minutes=75))  # drift stays out for a while
    settle = last_bad + int(env_config.settling_window_s["krios-room"] * 1e6)
    assert settle < to_us(T0 + timedelta(hours=5))
    early = evaluate_gate(env_session, "krios1", from_us(settle - 60_000_000), config=env_config)
    assert not early.allowed and any("back in limits after" in r for r in early.reasons)
    late = evaluate_gate(env_session, "krios1", from_us(settle + 60_000_000), config=env_config)
    assert late.allowed, late.reasons
    assert late.checked_at == from_us(settle + 60_000_000)
    # the screening room has no data at all: fail closed, naming every silent channel
    screening = evaluate_gate(env_session, "glacios1", from_us(settle), config=env_config)
    assert not screening.allowed
    assert any("screen-mag magnetic_field_ac: no readings" in r for r in screening.reasons)
    # instruments that are not environment-gated are always allowed
    assert evaluate_gate(env_session, "vitrobot1", config=env_config).allowed


def test_refuses_while_sensor_silent_longer_than_staleness(env_session, env_config):
    silent = fault_at("sensor_silent", T0 + timedelta(minutes=40), 10, sensor="krios-vib")
    feed(env_session, env_config, T0 - timedelta(hours=1), T0 + timedelta(hours=1), [silent])
    ok = evaluate_gate(env_session, "krios1", T0 + timedelta(minutes=41), config=env_config)
    assert ok.allowed, ok.reasons  # 60-70 s silent < stale_after_s 120 s
    refused = evaluate_gate(env_session, "krios1", T0 + timedelta(minutes=45), config=env_config)
    assert not refused.allowed
    assert refused.reasons == [
        "krios-vib vibration: sensor silent since 2026-03-02T00:39:50+00:00 "
        "(310 s without a reading; stale after 120 s)"
    ]
    # back, but a 10-minute hole in the settling window: refused until it has passed
    back = evaluate_gate(env_session, "krios1", T0 + timedelta(minutes=51), config=env_config)
    assert not back.allowed
    assert back.reasons == [
        "krios-vib vibration (all 20 bands): 49 min 50 s of the 60 min settling window "
        "(2026-03-01T23:51:00+00:00 to 2026-03-02T00:51:00+00:00) covered, longest gap "
        "10 min 10 s (2026-03-02T00:39:50+00:00 to 2026-03-02T00:50:00+00:00, allowed "
        "1 min); 301 of 360 expected readings every 10 s (84%, 80% needed)"
    ], back.reasons


def test_critical_alarm_refuses_and_override_is_recorded(env_session, env_config):
    vib = fault_at("vibration", T0 + timedelta(minutes=30), 5, room="krios-room", magnitude=10)
    feed(env_session, env_config, T0, T0 + timedelta(minutes=40), [vib], noise=0.0)
    alarms.evaluate(env_session, T0 + timedelta(minutes=33), env_config)
    env_session.commit()
    decision = evaluate_gate(env_session, "krios1", T0 + timedelta(minutes=33), config=env_config)
    assert not decision.allowed
    assert any(
        r.startswith("critical alarm #") and "krios-vibration" in r for r in decision.reasons
    )
    assert any(
        "krios-vib vibration: value" in r and "limit 6.25 µm/s" in r for r in decision.reasons
    )
    override = record_override(
        env_session,
        "krios1",
        "staff1",
        "FSE on site, vibration from crane test",
        decision,
        config=env_config,
    )
    env_session.commit()
    assert override.id and json.loads(override.refused_reasons) == decision.reasons
    with pytest.raises(InvalidOverride):
        record_override(env_session, "krios1", "staff1", " ", decision, config=env_config)
    with pytest.raises(UnknownInstrument):
        evaluate_gate(env_session, "titan9", config=env_config)
    payload = decision.to_dict()
    assert payload["allowed"] is False and payload["checked_at"].endswith("+00:00")


def test_fails_closed_without_tables(database_url, env_config):
    from instrument_env.db import session_factory

    with session_factory(database_url)() as session:
        decision = evaluate_gate(session, "krios1", T0, config=env_config)
    assert not decision.allowed
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith(
        "gate could not be evaluated"
    )
    assert "\n" not in decision.reasons[0] and "SELECT" not in decision.reasons[0]
