import numpy as np
import pytest
import scipy.fft as sfft

from pipeline.motion.align import align_spectra, fourier_crop, shift_ramp, subpixel_peak


def _smooth_image(n, rng):
    img = rng.normal(size=(n, n))
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    return sfft.irfft2(sfft.rfft2(img) * np.exp(-(kx**2 + ky**2) * 300), s=(n, n))


def test_shift_ramp_moves_content_by_minus_shift():
    img = np.zeros((32, 32))
    img[10, 12] = 1.0
    out = sfft.irfft2(sfft.rfft2(img) * shift_ramp((32, 32), np.array([3.0, -2.0])), s=(32, 32))
    # f(x + s): the point at (x=12, y=10) moves to (x=9, y=12)
    assert np.unravel_index(np.argmax(out), out.shape) == (12, 9)
    assert out.max() == pytest.approx(1.0, abs=1e-6)


def test_fourier_crop_is_binning_of_band_limited_image():
    rng = np.random.default_rng(1)
    img = _smooth_image(128, rng)
    crop = fourier_crop(sfft.rfft2(img), (64, 64))
    small = sfft.irfft2(crop, s=(64, 64)) / 4.0
    np.testing.assert_allclose(small, img[::2, ::2], atol=1e-3 * np.abs(img).max())


@pytest.mark.parametrize("true", [(0.0, 0.0), (1.3, -2.7), (-4.45, 0.25)])
def test_subpixel_peak(true):
    n = 64
    y, x = np.mgrid[0:n, 0:n]
    dx = (x - true[0] + n / 2) % n - n / 2
    dy = (y - true[1] + n / 2) % n - n / 2
    cc = np.exp(-(dx**2 + dy**2) / (2 * 1.5**2))
    px, py = subpixel_peak(cc, 10)
    assert abs(px - true[0]) < 0.1 and abs(py - true[1]) < 0.1


def test_align_spectra_recovers_known_drift():
    rng = np.random.default_rng(0)
    n_frames, n = 12, 128
    base = sfft.rfft2(_smooth_image(n, rng))
    drift = np.cumsum(rng.normal(size=(n_frames, 2)) * 1.2, axis=0)
    drift -= drift[0]
    frames = []
    for d in drift:
        img = sfft.irfft2(base * shift_ramp((n, n), -d), s=(n, n))
        frames.append(img + rng.normal(size=(n, n)) * img.std() * 1.0)
    spectra = np.stack([sfft.rfft2(f) for f in frames]).astype(np.complex64)
    result = align_spectra(spectra, (n, n), 1.0, bfactor_A2=100)
    assert result.converged
    err = np.sqrt(np.mean(np.sum((result.drift_px - drift) ** 2, axis=1)))
    assert err < 0.1
    assert np.all(result.drift_px[0] == 0)


def test_apply_shift_equals_shift_ramp_single_and_stacked():
    from pipeline.motion.align import apply_shift

    rng = np.random.default_rng(3)
    spec = (rng.normal(size=(3, 16, 9)) + 1j * rng.normal(size=(3, 16, 9))).astype(np.complex64)
    shifts = np.array([[0.3, -1.2], [2.5, 0.0], [-0.7, 4.1]])
    expected = spec * shift_ramp((16, 16), shifts)
    np.testing.assert_allclose(apply_shift(spec.copy(), shifts), expected, rtol=1e-5, atol=1e-5)
    one = spec[1].copy()
    np.testing.assert_allclose(apply_shift(one, shifts[1]), expected[1], rtol=1e-5, atol=1e-5)
