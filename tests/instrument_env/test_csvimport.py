from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

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


def test_one_latin1_row_among_6000_drops_only_itself(env_engine, env_config, tmp_path):
    from datetime import UTC, datetime, timedelta

    from instrument_env.csvimport import import_csv
    from instrument_env.db import session_factory
    from instrument_env.models import RejectedReading
    from tests.instrument_env.stored import channel_series

    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=20)
    lines = ["sensor,quantity,ts,value,unit"]
    for k in range(6000):
        ts = (t0 + timedelta(seconds=10 * k)).isoformat()
        lines.append(f"krios-t1,temperature,{ts},20.0,°C")
    data = bytearray("\n".join(lines).encode("utf-8") + b"\n")
    bad_line = 5001  # in the second batch of 5000
    # the same row written by a Latin-1 logger: '°' is one byte 0xB0, not UTF-8
    start = data.index(lines[bad_line].encode("utf-8"))
    data[start : start + len(lines[bad_line].encode())] = lines[bad_line].encode("latin-1")
    path = tmp_path / "logger.csv"
    path.write_bytes(bytes(data))
    # plus one impossible value, and one reading too far in the future
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"krios-t1,temperature,{t0.isoformat()}Z,-9999,°C\n".replace("+00:00Z", "Z"))
        handle.write(f"krios-t1,humidity,{(t0 + timedelta(days=2)).isoformat()},40,%RH\n")
    sessions = session_factory(env_engine)
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        summary = import_csv(handle, sessions, env_config, batch_size=5000)
    assert summary.accepted == 5999
    assert summary.rejected == 3
    assert summary.by_kind == {"row": 1, "implausible": 1, "clock": 1}
    assert summary.reasons[0][0] == f"line {bad_line + 1}"
    assert "not UTF-8" in summary.reasons[0][1]
    assert summary.line("logger.csv") == (
        "logger.csv: 5999 readings accepted, 3 rejected (clock 1, implausible 1, row 1)"
    )
    with sessions() as session:
        stored = channel_series(session, "krios-t1", "temperature", t0, t0 + timedelta(days=1))
        kept = (
            session.execute(sa.select(RejectedReading).order_by(RejectedReading.id)).scalars().all()
        )
    assert len(stored) == 5999
    # every refused row is kept with its reason, the undecodable one too (raw text, the
    # byte that is not UTF-8 escaped)
    assert sorted(r.kind for r in kept) == ["clock", "implausible", "invalid"]
    row = next(r for r in kept if r.kind == "invalid")
    assert row.reason.startswith(f"line {bad_line + 1}: not UTF-8 (")
    assert row.sensor == "krios-t1" and row.quantity == "temperature" and row.source == "csv"
    assert "20.0,\\\\xb0C" in row.payload, row.payload


def test_kept_refusals_are_bounded(env_session):
    from instrument_env.ingest import PAYLOAD_CHARS, keep_refused
    from instrument_env.models import RejectedReading

    huge = {"sensor": "krios-t1", "unit": "\x00" * 100_000, "band": "x" * 500}
    keep_refused(env_session, [(huge, "unit contains control characters " * 100)], source="m")
    env_session.commit()
    row = env_session.execute(sa.select(RejectedReading)).scalar_one()
    assert len(row.payload) == PAYLOAD_CHARS and row.payload.startswith('{"sensor": "krios-t1"')
    assert len(row.reason) <= 1000 and "\x00" not in row.payload
