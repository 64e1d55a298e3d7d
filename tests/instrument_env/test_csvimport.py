from __future__ import annotations

import io

import pytest

from instrument_env.csvimport import MalformedCSV, read_csv_readings


def test_wide_layout_with_local_time(env_config):
    text = (
        "timestamp,krios-t1/temperature,krios-t1/humidity,krios-vib/vibration/12.5\n"
        "2026-03-02 08:00:00,20.1,44.5,1.2\n"
        "2026-03-02 08:00:10,20.2,,1.3\n"
        "\n"
    )
    got = list(read_csv_readings(io.StringIO(text), env_config, timezone="Asia/Shanghai"))
    assert [w for w, _ in got] == [
        "line 2, column krios-t1/temperature",
        "line 2, column krios-t1/humidity",
        "line 2, column krios-vib/vibration/12.5",
        "line 3, column krios-t1/temperature",
        "line 3, column krios-vib/vibration/12.5",
    ]
    first = got[0][1]
    assert first == {
        "sensor": "krios-t1",
        "quantity": "temperature",
        "ts": "2026-03-02T08:00:00+08:00",
        "value": 20.1,
        "unit": "°C",
    }
    assert got[2][1]["band"] == "12.5" and got[2][1]["unit"] == "µm/s"


def test_long_layout_keeps_offsets_and_text_values(env_config):
    text = (
        "sensor,quantity,ts,value,unit\n"
        "krios-t1,temperature,2026-03-02T00:00:00+00:00,oops,°C\n"
        "krios-t1,temperature,2026-03-02T00:00:10,20.0,°C\n"
    )
    got = [r for _, r in read_csv_readings(io.StringIO(text), env_config)]
    assert got[0]["value"] == "oops"  # left for ingest to reject with a reason
    assert got[1]["ts"] == "2026-03-02T00:00:10"  # no timezone given: stays naive


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ("a,b\n1,2\n", "neither layout"),
        ("ts,krios-t1\n", "not SENSOR/QUANTITY"),
        ("ts,ghost/temperature\n", "unknown sensor 'ghost'"),
        ("ts,krios-t1/pressure\n", "no unit known"),
    ],
)
def test_bad_headers(env_config, text, problem):
    with pytest.raises(MalformedCSV, match=problem):
        list(read_csv_readings(io.StringIO(text), env_config))


def test_unknown_timezone(env_config):
    with pytest.raises(MalformedCSV, match="unknown time zone"):
        list(read_csv_readings(io.StringIO("ts\n"), env_config, timezone="Mars/Olympus"))
