from __future__ import annotations

import copy

import pytest

from cryofac import config as cfg
from cryofac.errors import ConfigError
from instrument_env.limits import UnknownInstrument, build_env_config, load_env_config


def test_default_config_joins_sensors_and_rules():
    env = load_env_config()
    krios = env.instrument("krios1")
    assert krios.room == "krios-room" and krios.environment_gated
    rules = {r.id: r for r in env.rules_for_room("krios-room")}
    drift = rules["krios-temp-drift"]
    assert drift.kind == "drift" and drift.window_s == 3600 and drift.unit == "°C"
    assert rules["krios-vibration"].band == "any"
    assert env.settling_window_s["krios-room"] == 3600
    assert env.mains_frequency_Hz == 50
    gated = {r.sensor for r in env.rules_for_room("krios-room") if r.gate}
    assert gated == {"krios-t1", "krios-t2", "krios-mag", "krios-vib"}
    with pytest.raises(UnknownInstrument, match="unknown instrument 'titan9'"):
        env.instrument("titan9")


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (
            lambda d: d["rooms"]["krios-room"]["rules"][0].update(sensor="ghost"),
            "rules[0].sensor",
            "unknown sensor",
        ),
        (
            lambda d: d["rooms"]["krios-room"]["rules"][0].update(sensor="screen-t1"),
            "rules[0].sensor",
            "is in room",
        ),
        (
            lambda d: d["rooms"]["krios-room"]["rules"][0].update(
                quantity="humidity", sensor="krios-mag"
            ),
            "rules[0].quantity",
            "does not report",
        ),
        (
            lambda d: d["rooms"]["krios-room"]["rules"][0].update(warning=23.0),
            "rules[0].warning",
            "before the limit",
        ),
        (
            lambda d: d["rooms"]["krios-room"]["rules"][2].pop("window_s"),
            "rules[2].window_s",
            "drift",
        ),
        (
            lambda d: d["rooms"]["krios-room"]["rules"][1].update(id="krios-temp-high"),
            "rules[1].id",
            "duplicate",
        ),
    ],
)
def test_bad_references_name_key_and_problem(edit, key, problem):
    facility = cfg.load_facility()
    limits = copy.deepcopy(cfg.load_limits())
    edit(limits)
    with pytest.raises(ConfigError, match=problem) as info:
        build_env_config(facility, cfg.validate("limits", limits, "limits.yaml"), "limits.yaml")
    assert key in info.value.key


def test_schema_rejects_unknown_kind():
    limits = copy.deepcopy(cfg.load_limits())
    limits["rooms"]["krios-room"]["rules"][0]["kind"] = "sideways"
    with pytest.raises(ConfigError, match="is not one of"):
        cfg.validate("limits", limits, "limits.yaml")
