from __future__ import annotations

import numpy as np
import pytest

from instrument_env.reduce import (
    band_velocity_rms_um_s,
    field_magnitude_uT,
    mains_rms_nT,
    nominal_band_label,
    third_octave_centres_Hz,
    vc_class,
)


def test_band_centres_and_labels():
    centres = third_octave_centres_Hz(1, 80)
    labels = [nominal_band_label(c) for c in centres]
    assert labels[:4] == ["1", "1.25", "1.6", "2"]
    assert "12.5" in labels and "31.5" in labels and labels[-1] == "80"
    assert len(labels) == 20


@pytest.mark.parametrize("f_Hz", [4.0, 12.589, 31.6, 63.1])
def test_sine_acceleration_gives_known_band_velocity(f_Hz):
    fs, seconds = 1000.0, 8.0
    t = np.arange(int(fs * seconds)) / fs
    v_amp = 10e-6  # 10 µm/s velocity amplitude -> RMS 7.07 µm/s
    accel = v_amp * 2 * np.pi * f_Hz * np.cos(2 * np.pi * f_Hz * t)
    rng = np.random.default_rng(1)
    accel += rng.normal(0, 1e-6, t.size)  # small broadband noise
    bands = band_velocity_rms_um_s(accel, fs)
    label = nominal_band_label(f_Hz)
    assert bands[label] == pytest.approx(10 / np.sqrt(2), rel=0.02)
    others = [v for k, v in bands.items() if k != label]
    assert max(others) < 0.5


def test_velocity_input_and_two_tones_and_vc_class():
    fs = 1000.0
    t = np.arange(8000) / fs
    v = 3e-6 * np.sqrt(2) * np.sin(2 * np.pi * 8 * t) + 5e-6 * np.sqrt(2) * np.sin(
        2 * np.pi * 40 * t
    )
    bands = band_velocity_rms_um_s(v, fs, kind="velocity")
    assert bands["8"] == pytest.approx(3.0, rel=0.01)
    assert bands["40"] == pytest.approx(5.0, rel=0.01)
    assert vc_class(bands) == "VC-D"  # worst band 5.0 <= 6.25 but > 3.12
    bands["40"] = 30.0
    assert vc_class(bands) == "VC-A"
    assert vc_class({"10": 2.0, "100": 500.0}) == "VC-E"  # 100 Hz is outside the VC range


def test_mains_rms_per_axis_with_harmonic_offset_and_noise():
    fs = 1000.0
    n = 1234  # not a whole number of 50 Hz periods
    t = np.arange(n) / fs
    rng = np.random.default_rng(2)
    amps_rms = np.array([40.0, 80.0, 5.0])
    phases = np.array([0.3, 1.2, -2.0])
    sig = np.sqrt(2) * amps_rms * np.sin(2 * np.pi * 50 * t[:, None] + phases)
    sig += np.array([20_000.0, -5_000.0, 44_000.0])  # Earth field offset per axis
    sig += 30 * np.sin(2 * np.pi * 150 * t)[:, None]  # third harmonic, not counted
    sig += rng.normal(0, 5, sig.shape)
    rms = mains_rms_nT(sig, fs, 50.0)
    np.testing.assert_allclose(rms, amps_rms, atol=0.6)
    with_h3 = mains_rms_nT(sig, fs, 50.0, harmonics=3)
    np.testing.assert_allclose(with_h3, np.sqrt(amps_rms**2 + 30**2 / 2), atol=0.6)
    assert mains_rms_nT(sig[:, 1], fs) == pytest.approx(80.0, abs=0.6)
    assert field_magnitude_uT(sig) == pytest.approx(np.sqrt(20**2 + 5**2 + 44**2), rel=1e-3)


def test_bad_input():
    with pytest.raises(ValueError):
        band_velocity_rms_um_s(np.zeros((10, 2)), 1000)
    with pytest.raises(ValueError):
        mains_rms_nT(np.zeros(100), 80.0, 50.0)


def test_trailing_peak_to_peak_matches_brute_force():
    from instrument_env.conditions import trailing_peak_to_peak

    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 700):
        ts = np.cumsum(rng.integers(1, 20, n)) * 10**6  # irregular sampling, µs
        v = rng.normal(size=n)
        for window_us in (0, 37 * 10**6, 10**12):
            expected = [np.ptp(v[(ts >= t - window_us) & (ts <= t)]) for t in ts]
            np.testing.assert_allclose(trailing_peak_to_peak(ts, v, window_us), expected)
