import math

import numpy as np
import pytest

from pipeline.motion.dose import (
    DoseWeighter,
    accumulated_dose,
    critical_exposure,
    voltage_scale,
)


def test_critical_exposure_matches_grant_grigorieff_eq3():
    k = np.array([0.05, 0.1, 0.25, 0.5])
    expected = 0.245 * k**-1.665 + 2.81
    np.testing.assert_allclose(critical_exposure(k), expected, rtol=1e-12)
    # 200 kV: 0.8 × the 300 kV value
    np.testing.assert_allclose(critical_exposure(k, 200.0), 0.8 * expected, rtol=1e-12)
    assert np.isinf(critical_exposure(np.array([0.0]))[0])


def test_voltage_scale():
    assert voltage_scale(300) == 1.0
    assert voltage_scale(200) == pytest.approx(0.8)
    assert voltage_scale(120) == pytest.approx(0.8)


def test_accumulated_dose_at_end_of_frame():
    np.testing.assert_allclose(accumulated_dose(4, 1.5, 2.0), [3.5, 5.0, 6.5, 8.0])


def analytic_weights(k, doses, voltage_kV=300.0):
    """Grant & Grigorieff 2015 by hand: w[f] = exp(−N_f / 2Nₑ(k)) with Σ_f w² = 1."""
    scale = 1.0 if voltage_kV >= 300 else 0.8
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ne = np.where(k > 0, scale * (0.245 * k**-1.665 + 2.81), np.inf)
    raw = np.exp(-np.asarray(doses, dtype=np.float64).reshape((-1,) + (1,) * k.ndim) / (2 * ne))
    return raw / np.sqrt(np.sum(raw**2, axis=0))


def test_dose_weighter_matches_analytic_formula():
    k = np.array([0.0, 0.02, 0.1, 0.3])
    doses = accumulated_dose(20, 1.0)
    weighter = DoseWeighter(k, doses)
    w = np.stack([np.asarray(weighter.weight(f), np.float64) for f in range(20)])
    np.testing.assert_allclose(w, analytic_weights(k, doses), rtol=2e-5)
    # Σ w² = 1 at every frequency; late frames weigh less at high resolution
    np.testing.assert_allclose(np.sum(w**2, axis=0), 1.0, rtol=1e-5)
    assert w[-1, 3] < 0.2 * w[0, 3]
    # at k = 0 all frames weigh the same
    np.testing.assert_allclose(w[:, 0], 1 / math.sqrt(20), rtol=1e-6)


def test_dose_weighter_at_200_kV():
    k = np.linspace(0, 0.5, 64).reshape(8, 8)
    doses = accumulated_dose(7, 2.0, 1.0)
    full = analytic_weights(k, doses, voltage_kV=200)
    weighter = DoseWeighter(k, doses, voltage_kV=200)
    assert len(weighter) == 7
    for f in range(7):
        np.testing.assert_allclose(weighter.weight(f), full[f], rtol=1e-5)


def test_dose_weighter_uneven_doses_and_random_access():
    k = np.array([0.0, 1e-4, 0.01, 0.2])
    doses = np.array([1.0, 1.5, 3.0, 3.2, 6.0])
    full = analytic_weights(k, doses)
    weighter = DoseWeighter(k, doses)
    for f in (4, 0, 2, 3):
        np.testing.assert_allclose(weighter.weight(f), full[f], rtol=1e-5)
    even = accumulated_dose(40, 1.0)
    full = analytic_weights(k, even)
    weighter = DoseWeighter(k, even)
    for f in range(40):  # sequential: recurrence path
        np.testing.assert_allclose(weighter.weight(f), full[f], rtol=2e-5)
