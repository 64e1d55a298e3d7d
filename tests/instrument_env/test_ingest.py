from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from instrument_env.ingest import ingest_readings
from instrument_env.models import DirtyRange, Reading, Rollup, to_us
from instrument_env.storage import (
    RetentionPolicy,
    apply_retention,
    refresh_rollups,
    rollup_series,
)
from tests.instrument_env.stored import channel_series

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def reading(i: int, value: float = 20.0, **over) -> dict:
    out = {
        "sensor": "krios-t1",
        "quantity": "temperature",
        "ts": (T0 + timedelta(seconds=10 * i)).isoformat(),
        "value": value,
        "unit": "°C",
    }
    out.update(over)
    return out


def count(session) -> int:
    return session.execute(sa.select(sa.func.count()).select_from(Reading)).scalar()


def test_malformed_rejected_with_reason_rest_kept(env_session):
    batch = [
        reading(0),
        reading(1, sensor="nope"),
        reading(2, unit="°F"),
        reading(3, value="warm"),
        reading(4, ts="2026-03-02T00:00:40"),  # no offset
        {"sensor": "krios-t1", "quantity": "temperature", "value": 1.0, "unit": "°C"},
        reading(6, quantity="pressure"),
        reading(7, value=float("nan")),
        "not a dict",
        reading(9, ts="yesterday"),
        reading(10, ts=(datetime.now(UTC) + timedelta(days=1)).isoformat()),
        reading(11, value=True),
        reading(12, value=20.5),
    ]
    result = ingest_readings(env_session, batch, source="test", now=T0 + timedelta(hours=1))
    env_session.commit()
    assert result.accepted == 2
    reasons = {r["index"]: r["reason"] for r in result.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "unknown sensor 'nope'" in reasons[1]
    assert "expected '°C'" in reasons[2]
    assert "not a finite number" in reasons[3]
    assert "no UTC offset" in reasons[4]
    assert "missing 'ts'" in reasons[5]
    assert "does not report 'pressure'" in reasons[6]
    assert "in the future" in reasons[10]
    assert count(env_session) == 2
    series = channel_series(env_session, "krios-t1", "temperature", T0, T0 + timedelta(hours=1))
    assert series.values.tolist() == [20.0, 20.5]
    assert series.unit == "°C"


def test_idempotent_and_out_of_order(env_session):
    batch = [reading(i, 20 + 0.01 * i) for i in range(50)]
    now = T0 + timedelta(hours=1)
    assert ingest_readings(env_session, batch, source="a", now=now).accepted == 50
    env_session.commit()
    # the same batch again, reversed, plus duplicates inside one batch: stored once
    again = list(reversed(batch)) + batch[:5]
    result = ingest_readings(env_session, again, source="b", now=now)
    env_session.commit()
    assert result.accepted == 55 and result.rejected == []
    assert count(env_session) == 50
    series = channel_series(env_session, "krios-t1", "temperature", T0, now)
    assert series.ts_us.tolist() == sorted(series.ts_us.tolist())
    assert series.values[7] == pytest.approx(20.07)
    # timestamps with another offset name the same instant
    other = reading(0, value=99.0, ts="2026-03-02T08:00:00+08:00")
    ingest_readings(env_session, [other], source="c", now=now)
    env_session.commit()
    assert count(env_session) == 50


def test_vibration_bands_are_separate_readings_with_derived_max(env_session):
    def vib(band, value, second=0):
        ts = (T0 + timedelta(seconds=second)).isoformat()
        return {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "ts": ts,
            "value": value,
            "unit": "µm/s",
            "band": band,
        }

    # the bands of one time arrive in two batches; the derived 'max' row keeps the largest
    first = ingest_readings(env_session, [vib(8, 1.0), vib(12.5, 2.0)], source="t", now=T0)
    second = ingest_readings(env_session, [vib("16", 3.0), vib(8, 9.0)], source="t", now=T0)
    env_session.commit()
    # band 8 again with another value: a conflict, refused (the stored value is kept)
    assert first.accepted == 2 and second.accepted == 1 and second.conflicts == 1
    assert second.rejected[0]["index"] == 1 and second.rejected[0]["kind"] == "conflict"
    series = channel_series(env_session, "krios-vib", "vibration", T0, T0)
    values = dict(zip(series.bands.tolist(), series.values.tolist(), strict=True))
    assert values == {"8": 1.0, "12.5": 2.0, "16": 3.0, "max": 3.0}  # first value of band 8 kept
    ingest_readings(env_session, [vib(8, 1.0), vib(12.5, 2.0)], source="again", now=T0)
    env_session.commit()
    assert channel_series(
        env_session, "krios-vib", "vibration", T0, T0, band="max"
    ).values.tolist() == [3.0]
    reserved = ingest_readings(
        env_session, [vib("max", 5.0, 10)], source="t", now=T0 + timedelta(minutes=1)
    )
    assert reserved.accepted == 0 and "reserved" in reserved.rejected[0]["reason"]


def test_rollups_include_late_readings(env_session):
    now = T0 + timedelta(hours=3)
    # 2 hours of 10 s data, minus the first minute which arrives late
    values = {i: 20 + (i % 7) * 0.1 for i in range(720)}
    ingest_readings(
        env_session, [reading(i, values[i]) for i in range(6, 720)], source="t", now=now
    )
    refresh_rollups(env_session)
    env_session.commit()
    first = rollup_series(env_session, 60, "krios-t1", "temperature", T0, T0)
    assert first == []
    ingest_readings(env_session, [reading(i, values[i]) for i in range(6)], source="late", now=now)
    assert refresh_rollups(env_session) > 0
    env_session.commit()
    minutes = rollup_series(env_session, 60, "krios-t1", "temperature", T0, T0 + timedelta(hours=2))
    assert len(minutes) == 120
    for k, bucket in enumerate(minutes):
        chunk = [values[i] for i in range(6 * k, 6 * k + 6)]
        assert bucket["n"] == 6
        assert bucket["min"] == pytest.approx(min(chunk))
        assert bucket["max"] == pytest.approx(max(chunk))
        assert bucket["mean"] == pytest.approx(sum(chunk) / 6)
    hours = rollup_series(env_session, 3600, "krios-t1", "temperature", T0, T0 + timedelta(hours=2))
    assert [h["n"] for h in hours] == [360, 360]
    assert hours[0]["mean"] == pytest.approx(sum(values[i] for i in range(360)) / 360)
    assert env_session.execute(sa.select(sa.func.count()).select_from(DirtyRange)).scalar() == 0


def test_retention_keeps_rollups(env_session):
    old = T0 - timedelta(days=500)
    batch = [reading(i, 21.0, ts=(old + timedelta(seconds=10 * i)).isoformat()) for i in range(12)]
    batch += [reading(i, 20.0) for i in range(12)]
    ingest_readings(env_session, batch[:12], source="t", now=old + timedelta(hours=1))
    ingest_readings(env_session, batch[12:], source="t", now=T0 + timedelta(hours=1))
    env_session.commit()
    deleted = apply_retention(env_session, T0, RetentionPolicy(raw_days=400, minute_days=450))
    env_session.commit()
    assert deleted["raw"] == 12 and deleted["60"] == 2
    assert count(env_session) == 12
    hours = rollup_series(env_session, 3600, "krios-t1", "temperature", old, old)
    assert hours[0]["n"] == 12 and hours[0]["mean"] == pytest.approx(21.0)
    left = env_session.execute(
        sa.select(sa.func.min(Reading.ts_us)).where(Reading.sensor == "krios-t1")
    ).scalar()
    assert left == to_us(T0)
    assert (
        env_session.execute(
            sa.select(sa.func.count()).select_from(Rollup).where(Rollup.resolution_s == 60)
        ).scalar()
        == 2
    )


def test_raw_samples_are_reduced_at_ingest(env_session, env_config):
    import numpy as np

    fs = 1000.0
    t = np.arange(4000) / fs
    velocity = 5e-6 * np.sqrt(2) * np.sin(2 * np.pi * 12.5 * t)  # 5 µm/s RMS in the 12.5 Hz band
    field = np.stack(
        [
            20_000 + 60 * np.sqrt(2) * np.sin(2 * np.pi * 50 * t),  # 60 nT RMS at 50 Hz
            10_000 + 20 * np.sqrt(2) * np.sin(2 * np.pi * 50 * t + 1),
            40_000 + 0 * t,
        ],
        axis=1,
    )[:500]
    ts = T0.isoformat()
    batch = [
        {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "ts": ts,
            "unit": "m/s",
            "raw": {"sample_rate_Hz": fs, "samples": velocity.tolist()},
        },
        {
            "sensor": "krios-mag",
            "quantity": "magnetic_field",
            "ts": ts,
            "unit": "nT",
            "raw": {"sample_rate_Hz": fs, "samples": field.tolist()},
        },
        {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "ts": ts,
            "unit": "g",
            "raw": {"sample_rate_Hz": fs, "samples": velocity.tolist()},
        },
        {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "ts": ts,
            "unit": "m/s",
            "raw": {"sample_rate_Hz": fs, "samples": velocity[:100].tolist()},
        },
    ]
    result = ingest_readings(env_session, batch, source="raw", now=T0)
    env_session.commit()
    assert result.accepted == 2
    assert [(r["index"], r["reason"][:30]) for r in result.rejected] == [
        (2, "raw vibration unit 'g' (expect"),
        (3, "raw vibration needs at least 2"),
    ]
    bands = channel_series(env_session, "krios-vib", "vibration", T0, T0)
    by_band = dict(zip(bands.bands.tolist(), bands.values.tolist(), strict=True))
    assert by_band["12.5"] == pytest.approx(5.0, rel=0.01)
    assert by_band["max"] == pytest.approx(5.0, rel=0.01) and by_band["8"] < 0.05
    ac = channel_series(env_session, "krios-mag", "magnetic_field_ac", T0, T0)
    dc = channel_series(env_session, "krios-mag", "magnetic_field_dc", T0, T0)
    assert ac.values[0] == pytest.approx(60.0, rel=0.01)  # worst axis
    assert dc.values[0] == pytest.approx(np.sqrt(20**2 + 10**2 + 40**2), rel=1e-3)


def test_simulator_raw_mode_matches_direct_values(env_session, env_config):
    from instrument_env.sim import EnvSimulator

    start, end = T0, T0 + timedelta(seconds=30)
    raw = EnvSimulator(env_config, seed=1, rooms=["krios-room"], raw=True, noise=0.0)
    readings = raw.readings(start, end)
    assert any("raw" in r for r in readings)
    result = ingest_readings(env_session, readings, source="sim", config=env_config, now=end)
    env_session.commit()
    assert result.rejected == []
    direct = EnvSimulator(env_config, seed=1, rooms=["krios-room"], noise=0.0).readings(start, end)
    expected = {
        (r["quantity"], r.get("band", "")): r["value"]
        for r in direct
        if r["sensor"] in ("krios-mag", "krios-vib") and r["ts"] == start.isoformat()
    }
    for (quantity, band), value in expected.items():
        sensor = "krios-vib" if quantity == "vibration" else "krios-mag"
        got = channel_series(env_session, sensor, quantity, start, start, band=band)
        assert got.values[0] == pytest.approx(value, rel=0.03, abs=0.02), (quantity, band)


def test_band_times_hold_the_stored_bands_of_each_time(env_session):
    """The per-time band labels the gate reads: rewritten from the stored band rows, so
    bands in several batches, resends and refused readings leave exactly the stored
    labels; retention removes them with the readings."""
    from instrument_env.models import BandTimes, band_set_text
    from instrument_env.storage import RetentionPolicy, apply_retention

    def vib(band, value, second=0):
        ts = (T0 + timedelta(seconds=second)).isoformat()
        return {"sensor": "krios-vib", "quantity": "vibration", "ts": ts, "value": value}, band

    def batch(*items):
        return [{**item, "unit": "µm/s", "band": band} for item, band in items]

    def stored():
        rows = env_session.execute(sa.select(BandTimes.ts_us, BandTimes.bands)).all()
        return {ts: bands for ts, bands in rows}

    ingest_readings(env_session, batch(vib(8, 1.0), vib(12.5, 2.0)), source="t", now=T0)
    ingest_readings(env_session, batch(vib("16", 3.0), vib(8, 9.0)), source="t", now=T0)
    ingest_readings(env_session, batch(vib(8, 1.0), vib(20, -1.0, 1)), source="t", now=T0)
    env_session.commit()
    t0 = to_us(T0)
    # band 8 resent and in conflict, band 20 at 1 s implausible (refused): not stored
    assert stored() == {t0: band_set_text(["8", "12.5", "16"])}
    assert band_set_text(["8", "12.5", "16"]) != band_set_text(["8", "12.5"])
    later = T0 + timedelta(days=40)
    ingest_readings(env_session, batch(vib(8, 1.0, 40 * 86400)), source="t", now=later)
    env_session.commit()
    apply_retention(env_session, later, RetentionPolicy(raw_days=30))
    env_session.commit()
    assert stored() == {t0 + 40 * 86_400_000_000: "8"}


def _spectrum(ts: datetime, levels: dict[str, float]) -> list[dict]:
    """A stored vibration spectrum of krios-vib: one reading per one-third-octave band."""
    from instrument_env.sim import VIB_BANDS

    return [
        {
            "sensor": "krios-vib",
            "quantity": "vibration",
            "ts": ts.isoformat(),
            "band": band,
            "value": levels.get(band, 0.5),
            "unit": "µm/s",
        }
        for band in VIB_BANDS
    ]


def test_vibration_class_of_the_latest_spectrum(env_session):
    from instrument_env.conditions import vibration_class

    assert vibration_class(env_session, "krios-vib", to_us(T0)) is None  # nothing stored
    quiet, later = T0, T0 + timedelta(minutes=1)
    batch = _spectrum(quiet, {"12.5": 5.0}) + _spectrum(later, {"8": 20.0})
    assert ingest_readings(env_session, batch, source="test", now=later).rejected == []
    env_session.commit()
    first = vibration_class(env_session, "krios-vib", to_us(quiet + timedelta(seconds=30)))
    assert (first.vc, first.worst_um_s, first.at_us) == ("VC-D", 5.0, to_us(quiet))
    latest = vibration_class(env_session, "krios-vib", to_us(later + timedelta(hours=1)))
    assert (latest.vc, latest.worst_um_s) == ("VC-B", 20.0)  # 12.5 <= 20 <= 25 µm/s


def test_rollups_of_every_band_together_are_the_worst_band(env_session):
    batch = _spectrum(T0, {"12.5": 5.0}) + _spectrum(T0 + timedelta(seconds=10), {"8": 7.0})
    ingest_readings(env_session, batch, source="test", now=T0 + timedelta(minutes=5))
    env_session.commit()
    refresh_rollups(env_session)
    env_session.commit()
    one = rollup_series(env_session, 60, "krios-vib", "vibration", T0, T0, band="12.5")
    assert [(b["n"], b["min"], b["max"]) for b in one] == [(2, 0.5, 5.0)]
    every = rollup_series(env_session, 60, "krios-vib", "vibration", T0, T0, band=None)
    assert len(every) == 1 and every[0]["max"] == 7.0 and every[0]["min"] == 0.5
    # the highest mean is the derived per-time maximum band's: (5 + 7) / 2
    assert every[0]["mean"] == pytest.approx(6.0)
    assert every[0]["n"] == 2 * 21  # 20 bands and the derived maximum, twice


def _rows(session, table) -> int:
    return session.execute(sa.select(sa.func.count()).select_from(table)).scalar()


@pytest.mark.parametrize("band", ["12.5", None])
def test_series_reads_readings_not_yet_rolled_up_without_writing(env_session, band):
    """A chart (a GET) shows readings the monitor has not rolled up yet, read from the raw
    table, equal to what the refresh will store — and writes nothing."""
    span = (T0, T0 + timedelta(hours=2))
    early = [
        r
        for i in range(0, 360, 30)
        for r in _spectrum(T0 + timedelta(seconds=10 * i), {"12.5": 1.0 + i / 100})
    ]
    ingest_readings(env_session, early, source="t", now=T0 + timedelta(hours=3))
    refresh_rollups(env_session)
    env_session.commit()
    # late and new readings: a bucket already rolled up and buckets never rolled up
    late = _spectrum(T0 + timedelta(seconds=15), {"12.5": 9.0, "8": 4.0}) + [
        r
        for i in range(360, 720, 30)
        for r in _spectrum(T0 + timedelta(seconds=10 * i), {"8": 2.0 + i / 100})
    ]
    ingest_readings(env_session, late, source="t", now=T0 + timedelta(hours=3))
    env_session.commit()
    stale = rollup_series(
        env_session, 60, "krios-vib", "vibration", *span, band=band, pending=False
    )
    rollups, dirty = _rows(env_session, Rollup), _rows(env_session, DirtyRange)
    assert dirty > 0
    current = {
        res: rollup_series(env_session, res, "krios-vib", "vibration", *span, band=band)
        for res in (60, 3600)
    }
    assert (_rows(env_session, Rollup), _rows(env_session, DirtyRange)) == (rollups, dirty)
    assert len(current[60]) == 24 and len(stale) == 12  # the option changes the series
    assert current[60][0]["n"] > stale[0]["n"]  # the late reading is in the first minute
    refresh_rollups(env_session)
    env_session.commit()
    for res, series in current.items():
        stored = rollup_series(
            env_session, res, "krios-vib", "vibration", *span, band=band, pending=False
        )
        assert [b["start_us"] for b in series] == [b["start_us"] for b in stored]
        for got, want in zip(series, stored, strict=True):
            assert got["n"] == want["n"]
            for key in ("min", "max", "mean"):
                assert got[key] == pytest.approx(want[key])
