"""Whole-field micrographs against theory: dose, Poisson noise, CTF zeros, particle truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.ctf_model import CTFParams, chi, ctf_2d, frequency_grid
from pipeline.geometry import euler_to_matrix
from pipeline.simulate import SimulationError, simulate_micrograph
from pipeline.simulate.micrograph import (
    ICE_POTENTIAL_V,
    interaction_constant,
    solvent_envelope,
    transfer_function,
)
from pipeline.simulate.projection import project_into

PX = 2.5
SHAPE = (768, 768)
CTF = CTFParams(15000.0, 14500.0, 20.0)


@pytest.fixture(scope="module")
def pair(volume64):
    kwargs = dict(ctf=CTF, n_particles=25, dose_e_A2=30.0, rng=4)
    noisy, truth = simulate_micrograph(volume64, SHAPE, PX, **kwargs)
    clean, _ = simulate_micrograph(volume64, SHAPE, PX, noise=False, **kwargs)
    empty, _ = simulate_micrograph(
        volume64, SHAPE, PX, noise=False, **(kwargs | {"n_particles": 0})
    )
    return noisy, clean, empty, truth


def test_mean_counts_equal_the_dose_and_noise_is_poisson(pair):
    noisy, clean, _, truth = pair
    assert noisy.dtype == np.float32 and noisy.shape == SHAPE
    assert np.all(noisy == np.round(noisy)) and noisy.min() >= 0  # electron counts
    assert noisy.mean() == pytest.approx(30.0 * PX**2, rel=0.02)
    residual = noisy.astype(np.float64) - clean
    assert residual.var() == pytest.approx(clean.mean(), rel=0.05)  # Poisson: variance = mean
    assert truth.dose_e_A2 == 30.0 and truth.pixel_size_A == PX


def test_particles_are_placed_without_overlap_and_off_contaminants(pair):
    _, _, _, truth = pair
    xy = truth.coords_px
    assert len(xy) == 25
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    diameter_px = truth.particle_diameter_A / PX
    assert d.min() >= diameter_px - 1e-6
    assert 110 < truth.particle_diameter_A < 150  # apoferritin: ~130 Å across
    for c, r in zip(truth.contaminant_coords_px, truth.contaminant_radii_px, strict=True):
        assert np.all(np.hypot(*(xy - c).T) >= r)
    assert np.all((xy >= diameter_px / 2 - 1e-6) & (xy <= np.array(SHAPE)[::-1] - diameter_px / 2))


def _predicted_particle_signal(volume, coords, eulers, dose):
    """Linear image of the particles alone from the truth: phase → CTF → counts."""
    phase = np.zeros(SHAPE)
    contrast = volume - ICE_POTENTIAL_V * solvent_envelope(volume, PX)
    for c, rotation in zip(coords, euler_to_matrix(*np.asarray(eulers).T), strict=True):
        project_into(phase, contrast, rotation, tuple(c), PX)
    phase *= interaction_constant(CTF.voltage_kV)
    linear = np.fft.irfft2(np.fft.rfft2(phase) * ctf_2d(SHAPE, PX, CTF), s=SHAPE)
    return 2 * linear * dose * PX**2


def _band(image, lo_A, hi_A):
    k = np.hypot(*np.meshgrid(np.fft.rfftfreq(SHAPE[1], PX), np.fft.fftfreq(SHAPE[0], PX)))
    keep = (k > 1 / lo_A) & (k < 1 / hi_A)
    return np.fft.irfft2(np.fft.rfft2(image - image.mean()) * keep, s=SHAPE).ravel()


def test_truth_coordinates_and_poses_reproduce_the_particle_signal(pair, volume64):
    noisy, clean, empty, truth = pair
    predicted = _predicted_particle_signal(volume64, truth.coords_px, truth.eulers_deg, 30.0)
    # the same seed draws the same ice, so clean − empty is the particles' own signal
    particles = clean.astype(np.float64) - empty
    assert np.corrcoef(_band(particles, 300, 6), _band(predicted, 300, 6))[0, 1] > 0.9
    rng = np.random.default_rng(0)
    random_poses = np.column_stack(
        [
            rng.uniform(0, 360, 25),
            np.degrees(np.arccos(rng.uniform(-1, 1, 25))),
            rng.uniform(0, 360, 25),
        ]
    )
    wrong_pose = _predicted_particle_signal(volume64, truth.coords_px, random_poses, 30.0)
    wrong_place = np.roll(predicted, (150, 230), axis=(0, 1))
    # in the noisy micrograph: the truth explains signal, wrong places nothing, and at
    # 6–12 Å the poses matter
    right = np.corrcoef(_band(noisy, 150, 10), _band(predicted, 150, 10))[0, 1]
    assert right > 0.2
    assert abs(np.corrcoef(_band(noisy, 150, 10), _band(wrong_place, 150, 10))[0, 1]) < right / 5
    fine = np.corrcoef(_band(noisy, 12, 6), _band(predicted, 12, 6))[0, 1]
    fine_wrong = np.corrcoef(_band(noisy, 12, 6), _band(wrong_pose, 12, 6))[0, 1]
    assert fine > 0.08 and fine > 4 * abs(fine_wrong)


def _equiphase_profile(image, px, ctf, oversample=2):
    """Power spectrum averaged over pixels of equal χ, indexed by the k of the mean defocus."""
    n = image.shape[0]
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    kx, ky = frequency_grid(image.shape, px)
    phase = chi(kx, ky, ctf)
    lam, cs = ctf.wavelength_A, ctf.cs_mm * 1e7
    mean_df = 0.5 * (ctf.defocus_u_A + ctf.defocus_v_A)
    a, b = 0.5 * math.pi * cs * lam**3, -math.pi * lam * mean_df
    u = (-b - np.sqrt(np.clip(b * b - 4 * a * phase, 0, None))) / (2 * a)
    bins = np.round(np.sqrt(np.clip(u, 0, None)) * n * px * oversample).astype(int).ravel()
    profile = np.bincount(bins, weights=power.ravel()) / np.maximum(np.bincount(bins), 1)
    return np.arange(profile.size) / (n * px * oversample), profile


def _ctf_zeros(defocus_A: float, ctf: CTFParams, k_max: float) -> np.ndarray:
    """Frequencies (1/Å) up to ``k_max`` where χ(k) + arcsin(A) = nπ (n ≥ 1): the CTF zeros."""
    lam, cs = ctf.wavelength_A, ctf.cs_mm * 1e7
    a, b = 0.5 * math.pi * cs * lam**3, -math.pi * lam * defocus_A  # in u = k²
    target = np.arange(1, 10000) * math.pi - math.asin(ctf.amplitude_contrast)
    target -= math.radians(ctf.phase_shift_deg)
    disc = b * b - 4 * a * target
    u = (-b - np.sqrt(disc[disc >= 0])) / (2 * a)
    k = np.sqrt(u[u > 0])
    return k[k <= k_max]


def _zero_errors(image, px, simulated, predicted, k_max=0.3):
    """Relative error of each observed power minimum (n ≥ 2) vs the zeros of ``predicted``."""
    k, profile = _equiphase_profile(image, px, simulated)
    mean_df = 0.5 * (predicted.defocus_u_A + predicted.defocus_v_A)
    zeros = _ctf_zeros(mean_df, predicted, k_max)
    errors = []
    for i in range(1, len(zeros) - 1):
        z = zeros[i]
        half = 0.3 * min(zeros[i + 1] - z, z - zeros[i - 1])
        idx = np.where((k > z - half) & (k < z + half))[0]
        j = idx[np.argmin(profile[idx])]
        y0, y1, y2 = np.log(profile[j - 1 : j + 2])
        offset = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if y0 - 2 * y1 + y2 > 0 else 0.0
        errors.append((k[j] + offset * (k[1] - k[0]) - z) / z)
    return np.abs(errors)


@pytest.mark.parametrize(
    "defocus_A, astigmatism_A, angle_deg", [(12000, 0, 0), (20000, 1000, 30), (8000, 400, -60)]
)
def test_power_spectrum_zeros_are_where_chi_predicts(volume96, defocus_A, astigmatism_A, angle_deg):
    ctf = CTFParams(defocus_A + astigmatism_A / 2, defocus_A - astigmatism_A / 2, angle_deg)
    image, _ = simulate_micrograph(volume96, (1024, 1024), 1.5, ctf=ctf, n_particles=30, rng=2)
    errors = _zero_errors(image, 1.5, ctf, ctf)
    assert len(errors) >= 8
    assert errors.max() < 0.02
    assert np.median(errors) < 0.002
    # a CTF 4 % off in defocus or with the astigmatism turned 90° fits clearly worse
    off = CTFParams(ctf.defocus_u_A * 1.04, ctf.defocus_v_A * 1.04, angle_deg)
    assert np.median(_zero_errors(image, 1.5, ctf, off)) > 0.005
    if astigmatism_A:
        turned = CTFParams(ctf.defocus_u_A, ctf.defocus_v_A, angle_deg + 90)
        assert np.median(_zero_errors(image, 1.5, turned, turned)) > 0.004


def test_transfer_function_phase_is_chi():
    ctf = CTFParams(15000.0, 14000.0, 33.0)
    transfer = transfer_function((64, 80), 1.2, ctf, 0.0, 0.0)
    kx, ky = frequency_grid((64, 80), 1.2)
    assert np.abs(np.angle(transfer * np.exp(-1j * chi(kx, ky, ctf)))).max() < 1e-3
    assert np.abs(transfer).max() == pytest.approx(1.0, abs=1e-6)


def test_carbon_edge_and_determinism(volume64):
    a, ta = simulate_micrograph(volume64, (256, 256), PX, n_particles=5, carbon_edge=True, rng=9)
    b, tb = simulate_micrograph(volume64, (256, 256), PX, n_particles=5, carbon_edge=True, rng=9)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta.coords_px, tb.coords_px)
    assert 0.0 < ta.carbon_fraction < 0.5
    assert ta.to_dict()["ctf"]["defocus_u_A"] == ta.ctf.defocus_u_A


@pytest.mark.parametrize(
    "kwargs",
    [dict(pixel_size_A=-1.0), dict(dose_e_A2=0.0), dict(shape=(8, 8)), dict(n_particles=-1)],
)
def test_bad_parameters_raise(volume64, kwargs):
    with pytest.raises(SimulationError):
        simulate_micrograph(volume64, **(dict(shape=(64, 64), pixel_size_A=PX) | kwargs))


def test_contaminants_are_dark_blobs_where_the_truth_puts_them(pair):
    _, clean, _, truth = pair
    median = np.median(clean)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    seen = 0
    for (cx, cy), r in zip(truth.contaminant_coords_px, truth.contaminant_radii_px, strict=True):
        inside = np.hypot(xx - cx, yy - cy) < 0.5 * r
        if inside.sum() < 50:
            continue  # (mostly) outside the field
        seen += 1
        assert clean[inside].mean() < 0.8 * median
    assert seen >= 1


def test_excluded_volume_sets_the_displaced_ice_and_raises_the_contrast(volume64):
    """The 1 V envelope displaces ~1.4x the protein's partial specific volume; with
    ``excluded_volume_A3`` the mask holds that volume and the particle's integrated contrast
    (potential minus displaced ice) is larger; the micrograph changes accordingly."""
    from pipeline.simulate.micrograph import protein_volume_A3

    volume = protein_volume_A3(431.0 / 0.93)  # apoferritin without hydrogens: 431 kDa
    default = solvent_envelope(volume64, PX)
    exact = solvent_envelope(volume64, PX, volume)
    assert exact.sum() * PX**3 == pytest.approx(volume, rel=0.02)
    assert default.sum() * PX**3 > 1.2 * volume
    contrast = [(volume64 - ICE_POTENTIAL_V * m).sum() for m in (default, exact)]
    assert contrast[1] > 1.5 * contrast[0]
    kwargs = dict(n_particles=3, rng=2, noise=False, ctf=CTF, n_contaminants=0)
    a, ta = simulate_micrograph(volume64, (256, 256), PX, **kwargs)
    b, tb = simulate_micrograph(volume64, (256, 256), PX, excluded_volume_A3=volume, **kwargs)
    np.testing.assert_array_equal(ta.coords_px, tb.coords_px)
    assert np.abs(a - b).max() > 0.01 * a.std()
    with pytest.raises(SimulationError):
        solvent_envelope(volume64, PX, 1e12)
