"""Movies: dose per frame, gain, drift and local deformation against the truth record."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from pipeline.simulate import (
    SimulationError,
    SpecimenMotion,
    simulate_movie,
    write_gain,
    write_movie,
)

PX = 2.5
SHAPE = (384, 384)


@pytest.fixture(scope="module")
def movie(volume64):
    kwargs = dict(n_frames=10, dose_per_frame_e_A2=2.0, motion=SpecimenMotion(30.0), rng=11)
    frames, truth = simulate_movie(volume64, SHAPE, PX, **kwargs)
    clean, clean_truth = simulate_movie(volume64, SHAPE, PX, noise=False, **kwargs)
    return frames, truth, clean, clean_truth


def _fourier_shift(image, dx, dy):
    ny, nx = image.shape
    kx = np.fft.rfftfreq(nx)[None, :]
    ky = np.fft.fftfreq(ny)[:, None]
    ramp = np.exp(-2j * np.pi * (kx * dx + ky * dy))
    return np.fft.irfft2(np.fft.rfft2(image) * ramp, s=image.shape)


def _corr(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def _highpass(image, cutoff_px=12.0):
    """Remove features larger than ``cutoff_px`` (ice thickness, contaminant bodies)."""
    k = np.hypot(*np.meshgrid(np.fft.rfftfreq(image.shape[1]), np.fft.fftfreq(image.shape[0])))
    return np.fft.irfft2(np.fft.rfft2(image) * (k > 1 / cutoff_px), s=image.shape)


def test_dose_per_frame_and_gain(movie):
    frames, truth, clean, clean_truth = movie
    assert frames.shape == (10, *SHAPE) and frames.dtype == np.float32
    counts = frames * truth.gain
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # gain recovers counts
    assert counts.mean(axis=(1, 2)) == pytest.approx(np.full(10, 2.0 * PX**2), rel=0.02)
    assert truth.gain.std() > 0.03  # a real gain pattern, not ones
    np.testing.assert_array_equal(truth.gain, clean_truth.gain)
    # Poisson per frame around the noiseless expectation
    residual = counts - clean * clean_truth.gain
    assert residual.var() == pytest.approx(2.0 * PX**2, rel=0.05)


def test_drift_is_fast_early_then_slow_and_has_the_requested_length(movie):
    _, truth, _, _ = movie
    np.testing.assert_array_equal(truth.drift_px[0], [0.0, 0.0])
    steps = np.hypot(*np.diff(truth.drift_px, axis=0).T)
    assert np.all(np.diff(steps) < 0)
    assert truth.accumulated_motion_A == pytest.approx(30.0, rel=1e-6)
    assert truth.local_px(0, 100.0, 200.0) == pytest.approx([0.0, 0.0])
    peak = np.abs(truth.local_px(9, *np.meshgrid(np.arange(0, 384, 16), np.arange(0, 384, 16))))
    assert 0.5 < peak.max() / (3.0 / PX) <= 1.0 + 1e-9


def test_summed_frames_shifted_back_by_the_truth_drift_match_the_noiseless_image(movie):
    frames, truth, clean, _ = movie
    counts = frames * truth.gain
    reference = _highpass(clean[0] * truth.gain)  # noiseless frame 1 (frame-1 coordinates)
    plain = _highpass(counts.sum(0))
    aligned = _highpass(
        sum(
            _fourier_shift(frame, -d[0], -d[1])
            for frame, d in zip(counts, truth.drift_px, strict=True)
        )
    )
    inner = (slice(40, -40), slice(40, -40))
    corr_plain = _corr(plain[inner], reference[inner])
    corr_aligned = _corr(aligned[inner], reference[inner])
    assert corr_aligned > corr_plain + 0.1
    # shifting by the opposite sign is as bad as not aligning at all: the sign is tested
    wrong = _highpass(
        sum(
            _fourier_shift(frame, d[0], d[1])
            for frame, d in zip(counts, truth.drift_px, strict=True)
        )
    )
    assert _corr(wrong[inner], reference[inner]) < corr_aligned - 0.1


def _phase_correlation_shift(a, b, step=0.02):
    """Sub-pixel shift (dx, dy) that moves a onto b (b ≈ a shifted by (dx, dy)).

    Integer peak of the phase correlation, then a matrix-DFT search on a ``step`` grid."""
    cross = np.fft.fft2(b) * np.conj(np.fft.fft2(a))
    cross /= np.abs(cross) + 1e-12
    corr = np.fft.ifft2(cross).real
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    n = a.shape[0]
    x0, y0 = (ix if ix < n // 2 else ix - n), (iy if iy < n // 2 else iy - n)
    offsets = np.arange(-1, 1 + step / 2, step)
    k = np.fft.fftfreq(n)
    ex = np.exp(2j * np.pi * k[:, None] * (x0 + offsets)[None, :])
    ey = np.exp(2j * np.pi * k[:, None] * (y0 + offsets)[None, :])
    scores = (ey.T @ cross @ ex).real  # [sy, sx]
    jy, jx = np.unravel_index(np.argmax(scores), scores.shape)
    return x0 + offsets[jx], y0 + offsets[jy]


def test_local_deformation_moves_each_patch_by_the_truth_displacement(movie):
    _, truth, clean, _ = movie
    first, last = clean[0] * truth.gain, clean[-1] * truth.gain
    window = np.outer(np.hanning(96), np.hanning(96))
    errors, spread = [], []
    for cy in (96, 192, 288):
        for cx in (96, 192, 288):
            sl = (slice(cy - 48, cy + 48), slice(cx - 48, cx + 48))
            a, b = first[sl] - first[sl].mean(), last[sl] - last[sl].mean()
            dx, dy = _phase_correlation_shift(a * window, b * window)
            expected = truth.shift_px(9, float(cx), float(cy))
            errors.append(np.hypot(dx - expected[0], dy - expected[1]))
            spread.append(truth.local_px(9, float(cx), float(cy)))
    assert np.max(errors) < 0.35
    # the local part really varies across the field (more than the tolerance)
    spread = np.asarray(spread)
    assert np.ptp(spread, axis=0).max() > 0.5


def test_movies_write_as_mrc_and_tiff(tmp_path, volume64):
    frames, truth = simulate_movie(volume64, (64, 64), PX, n_frames=3, gain=False, rng=1)
    assert np.all(truth.gain == 1) and np.all(frames == np.round(frames))
    tiff = write_movie(tmp_path / "movie.tiff", frames, PX)
    data = tifffile.imread(tiff)
    assert data.dtype == np.uint8 and data.shape == (3, 64, 64)  # counts < 256
    np.testing.assert_array_equal(data, frames)
    mrcs = write_movie(tmp_path / "movie.mrcs", frames, PX)
    with mrcfile.open(mrcs) as handle:
        assert handle.data.shape == (3, 64, 64)
        assert handle.voxel_size.x == pytest.approx(PX)
    floats, truth = simulate_movie(volume64, (64, 64), PX, n_frames=2, rng=1)
    assert tifffile.imread(write_movie(tmp_path / "f.tif", floats, PX)).dtype == np.float32
    gain = write_gain(tmp_path / "gain.mrc", truth.gain, PX)
    with mrcfile.open(gain) as handle:
        np.testing.assert_allclose(handle.data, truth.gain)
    with pytest.raises(SimulationError):
        write_movie(tmp_path / "movie.png", frames, PX)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_frames=0), dict(dose_per_frame_e_A2=-1), dict(pixel_size_A=0), dict(shape=(4, 4))],
)
def test_bad_parameters_raise(volume64, kwargs):
    with pytest.raises(SimulationError):
        simulate_movie(volume64, **(dict(shape=(64, 64), pixel_size_A=PX) | kwargs))


@pytest.mark.parametrize("amplitudes", [(-1.0, 3.0), (20.0, -0.5)])
def test_negative_motion_is_refused(amplitudes):
    with pytest.raises(SimulationError, match="must be ≥ 0"):
        SpecimenMotion(*amplitudes)
