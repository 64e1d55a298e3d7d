"""Issue 3's CTF bar on the simulator's micrographs (pipeline.simulate.micrograph:
apoferritin in amorphous ice, full-wave CTF with envelopes, Poisson counts at 40 e/Å²)."""

import math

import numpy as np
import pytest

from benchmarks.cases import CTF_CASES
from pipeline.ctf_estimate import CTFEstimateError, estimate_ctf
from pipeline.ctf_estimate.fit import _chi, _ctf2, _Grid
from pipeline.ctf_model import CTFParams, ctf_2d, electron_wavelength_A

from .synth import synthetic_micrograph


def test_internal_ctf_matches_ctf_model():
    p = CTFParams(15000.0, 13000.0, 33.0, amplitude_contrast=0.1, phase_shift_deg=20.0)
    grid = _Grid(128, 1.1)
    lam = electron_wavelength_A(300.0)
    dz = 14000.0 + 1000.0 * (
        grid.cos2 * math.cos(math.radians(66)) + grid.sin2 * math.sin(math.radians(66))
    )
    mine = _ctf2(_chi(grid.k2, dz, lam, 2.7e7, math.radians(20.0)), 0.1)
    ref = np.asarray(ctf_2d((128, 128), 1.1, p, rfft=True), np.float64) ** 2
    np.testing.assert_allclose(mine, ref, atol=2e-5)


@pytest.fixture(scope="module")
def estimates():
    from pipeline.simulate import reference_volume
    from pipeline.simulate.micrograph import simulate_micrograph

    volume = reference_volume(128, 1.0)
    out = []
    for i, (mean, astig, angle) in enumerate(CTF_CASES):
        truth = CTFParams(mean + astig / 2, mean - astig / 2, angle)
        image, _ = simulate_micrograph(
            volume, (1024, 1024), 1.0, n_particles=40, ctf=truth, dose_e_A2=40.0, rng=100 + i
        )
        out.append((truth, estimate_ctf(image, 1.0)))
    return out


@pytest.mark.slow
def test_ctf_bar_defocus_astigmatism_angle(estimates):
    mean_err, astig_err, angle_err = [], [], []
    for truth, est in estimates:
        p = est.params
        assert p.defocus_u_A >= p.defocus_v_A
        assert -90.0 < p.defocus_angle_deg <= 90.0
        mean_err.append(
            abs((p.defocus_u_A + p.defocus_v_A) - (truth.defocus_u_A + truth.defocus_v_A)) / 2
        )
        astig = truth.defocus_u_A - truth.defocus_v_A
        astig_err.append(abs((p.defocus_u_A - p.defocus_v_A) - astig))
        if astig >= 500:
            d = (p.defocus_angle_deg - truth.defocus_angle_deg + 90.0) % 180.0 - 90.0
            angle_err.append(abs(d))
    assert np.median(mean_err) <= 10.0, mean_err
    assert np.median(astig_err) <= 50.0, astig_err
    assert max(angle_err) <= 3.0, angle_err


@pytest.mark.slow
def test_fit_resolution_and_figure_of_merit(estimates):
    for _truth, est in estimates:
        assert 2.0 < est.max_resolution_A < 10.0
        assert est.figure_of_merit > 0.15
        assert est.spectrum.shape == (est.tile, est.tile // 2 + 1)


@pytest.mark.slow
def test_phase_shift_is_recovered():
    truth = CTFParams(8000.0, 7600.0, 10.0, phase_shift_deg=70.0, bfactor_A2=60.0)
    image = synthetic_micrograph(truth, shape=(1024, 1024), seed=7)
    est = estimate_ctf(image, 1.0, phase_shift=True)
    assert abs(est.params.phase_shift_deg - 70.0) < 10.0
    mean = (est.params.defocus_u_A + est.params.defocus_v_A) / 2
    assert abs(mean - 7800.0) < 100.0


def test_bad_micrographs():
    with pytest.raises(CTFEstimateError, match="constant"):
        estimate_ctf(np.ones((512, 512), np.float32), 1.0)
    bad = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(CTFEstimateError, match="NaN"):
        estimate_ctf(bad, 1.0)
    with pytest.raises(CTFEstimateError, match="too small"):
        estimate_ctf(np.ones((64, 64), np.float32), 1.0)
    with pytest.raises(CTFEstimateError, match="2D"):
        estimate_ctf(np.ones((4, 64, 64), np.float32), 1.0)
