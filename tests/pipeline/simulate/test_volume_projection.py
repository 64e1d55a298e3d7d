"""Ground-truth map and projections against independent physics and geometry."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from pipeline.geometry import euler_to_matrix
from pipeline.simulate import SimulationError, project, reference_volume, structure_atoms
from pipeline.simulate.volume import POTENTIAL_V_A2


def _radial(shape):
    n = shape[0]
    z, y, x = np.indices(shape) - n // 2
    return x, y, z


def test_structure_is_the_apoferritin_24mer():
    atoms = structure_atoms()
    # 24 × ~174 residues of ferritin heavy chain, ~430 kDa without hydrogens
    assert 30000 < len(atoms.mass_Da) < 35000
    assert 400 < atoms.total_mass_kDa < 480
    assert 60 < atoms.max_radius_A < 75  # outer radius of the ferritin shell ≈ 60–65 Å


def test_integrated_potential_equals_sum_of_atomic_scattering(volume96):
    """∫V d³r = 47.878 V·Å² × Σ f_e(0): the map's DC term is set by the atoms, not by the grid."""
    atoms = structure_atoms()
    expected = POTENTIAL_V_A2 * sum(
        gemmi.Element(e).c4322.calculate_sf(0.0) * (atoms.element == e).sum()
        for e in set(atoms.element)
    )
    measured = float(volume96.astype(np.float64).sum()) * 1.5**3
    assert measured == pytest.approx(expected, rel=0.01)


def test_map_is_centred_protein_positive_and_has_the_shell_radius(volume96):
    v = volume96.astype(np.float64)
    assert v.dtype == np.float64 and volume96.dtype == np.float32
    x, y, z = _radial(v.shape)
    positive = np.clip(v, 0, None)
    total = positive.sum()
    for c in (x, y, z):
        assert abs((positive * c).sum() / total) < 0.2  # centre of mass on voxel box//2
    r_A = np.sqrt(x * x + y * y + z * z) * 1.5
    atoms = structure_atoms()
    rms_atoms = np.sqrt((np.linalg.norm(atoms.xyz_A, axis=1) ** 2).mean())
    rms_map = np.sqrt((positive * r_A**2).sum() / total)
    assert rms_map == pytest.approx(rms_atoms, rel=0.03)
    # hollow: the cavity (r < 30 Å) holds nothing, the shell (45–55 Å) is dense protein
    assert np.abs(v[r_A < 30]).mean() < 0.05 * v[(r_A > 45) & (r_A < 55)].mean()
    assert v[(r_A > 45) & (r_A < 55)].mean() > 2.0  # volts: protein ≈ 5–7 V on average
    assert np.abs(v[r_A > 80]).max() < 0.02 * v.max()


def test_map_is_cached_and_resolution_lowpasses(tmp_path):
    first = reference_volume(40, 4.0, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    again = reference_volume(40, 4.0, cache=tmp_path)
    np.testing.assert_array_equal(first, again)
    low = reference_volume(40, 4.0, resolution_A=20.0, cache=tmp_path)
    spectrum = np.abs(np.fft.fftn(first)) ** 2
    spectrum_low = np.abs(np.fft.fftn(low)) ** 2
    k = np.fft.fftfreq(40, d=4.0)
    kr = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    high = kr > 1 / 15
    assert spectrum_low[high].sum() < 1e-3 * spectrum[high].sum()
    assert first.sum() == pytest.approx(low.sum(), rel=1e-3)


@pytest.mark.parametrize("bad", [dict(box=4), dict(pixel_size_A=-1.0), dict(resolution_A=0.0)])
def test_bad_volume_parameters_raise_one_line_errors(bad, tmp_path):
    kwargs = dict(box=32, pixel_size_A=2.0, cache=tmp_path) | bad
    with pytest.raises(SimulationError):
        reference_volume(**kwargs)


def _gaussian_volume(n, centre_px, cov_px):
    x, y, z = _radial((n, n, n))
    d = np.stack([x, y, z], -1) - centre_px
    inv = np.linalg.inv(cov_px)
    return np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, inv, d)).astype(np.float32)


def _gaussian_projection(n, centre_px, cov_px, rotation, shift_px, pixel_size_A):
    """Analytic line integral of the Gaussian blob at pose A, then moved by shift_px."""
    c = rotation @ centre_px
    s = rotation @ cov_px @ rotation.T
    s2 = s[:2, :2]
    # ∫ exp(-½ dᵀΣ⁻¹d) dz = √(2π·Σ_zz) · exp(-½ d_xyᵀ (Σ_xy)⁻¹ d_xy) (marginal of a Gaussian)
    amp = np.sqrt(2 * np.pi * np.linalg.det(s) / np.linalg.det(s2)) * pixel_size_A
    x, y = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="xy")
    d = np.stack([x - c[0] - shift_px[0], y - c[1] - shift_px[1]], -1)
    return amp * np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(s2), d))


@pytest.mark.parametrize("method", ["real", "fourier"])
def test_projection_of_a_gaussian_blob_matches_the_analytic_line_integral(method):
    n, px = 48, 2.0
    centre = np.array([6.0, -3.0, 4.0])  # (x, y, z) pixels from the centre voxel
    cov = np.array([[9.0, 2.0, 0.0], [2.0, 4.0, 1.0], [0.0, 1.0, 6.0]])
    volume = _gaussian_volume(n, centre, cov)
    eulers = np.array([[30.0, 50.0, -20.0], [120.0, 100.0, 60.0], [0.0, 0.0, 0.0]])
    rotations = euler_to_matrix(eulers[:, 0], eulers[:, 1], eulers[:, 2])
    shifts_A = np.array([[2.4, -1.0], [0.0, 3.3], [-5.0, 0.7]])
    images = project(volume, rotations, px, shifts_A, method=method)
    for image, rotation, shift in zip(images, rotations, shifts_A, strict=True):
        # RELION origin: the particle is moved by −origin
        expected = _gaussian_projection(n, centre, cov, rotation, -shift / px, px)
        corr = np.corrcoef(image.ravel(), expected.ravel())[0, 1]
        assert corr > 0.995
        # ray sums are exact to interpolation error; central slices carry ~2–4 % gridding error
        tolerance = 0.01 if method == "real" else 0.04
        assert image.sum() == pytest.approx(expected.sum(), rel=tolerance)
        peak = np.unravel_index(np.argmax(image), image.shape)
        assert peak == np.unravel_index(np.argmax(expected), expected.shape)


def _atom_projection(rotation, n, px, lowpass_A):
    """Projection computed from the atoms alone: scattering-weighted points, low-passed."""
    atoms = structure_atoms()
    weight = np.array([gemmi.Element(e).c4322.calculate_sf(0.0) for e in atoms.element])
    xy = (atoms.xyz_A @ rotation.T)[:, :2] / px + n // 2
    image = np.zeros((n, n))
    i0 = np.floor(xy).astype(int)
    f = xy - i0
    for dx in (0, 1):
        for dy in (0, 1):
            w = weight * np.where(dx, f[:, 0], 1 - f[:, 0]) * np.where(dy, f[:, 1], 1 - f[:, 1])
            np.add.at(image, (i0[:, 1] + dy, i0[:, 0] + dx), w)
    return _gaussian_lowpass(image, px, lowpass_A)


def _gaussian_lowpass(image, px, resolution_A):
    k = np.fft.fftfreq(image.shape[0], d=px)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-k2 * resolution_A**2 * 2)).real


@pytest.mark.parametrize("method", ["real", "fourier"])
def test_map_projection_matches_projected_atoms(volume96, method):
    """Same pose, two routes: map → projector vs atoms rotated by A and splatted directly."""
    eulers = np.array([[10.0, 35.0, 80.0], [200.0, 120.0, -45.0]])
    rotations = euler_to_matrix(eulers[:, 0], eulers[:, 1], eulers[:, 2])
    images = project(volume96, rotations, 1.5, method=method)
    for image, rotation in zip(images, rotations, strict=True):
        expected = _atom_projection(rotation, 96, 1.5, 4.0)
        got = _gaussian_lowpass(image, 1.5, 4.0)
        right = np.corrcoef(got.ravel(), expected.ravel())[0, 1]
        assert right > 0.99
        # the transposed matrix (the opposite convention) must match clearly worse; the
        # octahedral, nearly spherical shell keeps even wrong poses fairly similar
        wrong = _atom_projection(rotation.T, 96, 1.5, 4.0)
        assert np.corrcoef(got.ravel(), wrong.ravel())[0, 1] < right - 0.04


def test_fourier_and_real_space_projectors_agree(volume96):
    rng = np.random.default_rng(3)
    from pipeline.geometry import random_rotations

    rotations = random_rotations(3, rng)
    shifts = rng.uniform(-4, 4, (3, 2))
    real = project(volume96, rotations, 1.5, shifts, method="real")
    fourier = project(volume96, rotations, 1.5, shifts, method="fourier")
    for a, b in zip(real, fourier, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
