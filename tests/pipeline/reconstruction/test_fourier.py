import numpy as np
import pytest

from pipeline.geometry import euler_to_matrix, random_rotations
from pipeline.reconstruction import backproject, fourier
from pipeline.reconstruction.fsc import fsc, resolution_at

from .helpers import blob_volume, real_space_projection


@pytest.fixture(scope="module")
def volume():
    return blob_volume(40, np.random.default_rng(1))


def test_half_plane_is_sorted_and_friedel_unique():
    plane = fourier.half_plane(16)
    assert np.all(np.diff(plane.radius) >= 0)
    pairs = set(zip(plane.kx.tolist(), plane.ky.tolist(), strict=True))
    assert (0, 0) not in pairs
    for kx, ky in pairs:
        assert (-kx, -ky) not in pairs
    assert plane.count(1.0) == 2  # (1, 0) and (0, 1)


def test_image_half_plane_round_trip():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 16, 16)).astype(np.float32)
    img -= img.mean(axis=(1, 2), keepdims=True)
    plane = fourier.half_plane(16, 16)
    back = fourier.half_plane_to_images(fourier.images_to_half_plane(img, plane), plane)
    # expected: the image with every frequency outside the disc |k| <= N/2 - 1 (and DC) removed
    f = np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1)))
    k = np.fft.fftfreq(16, 1 / 16)
    rad = np.hypot(k[:, None], k[None, :])
    f[:, (rad > 7) | (rad == 0)] = 0
    expected = np.fft.fftshift(np.fft.ifft2(f).real, axes=(-2, -1))
    assert np.allclose(back, expected, atol=1e-4)


@pytest.mark.parametrize("angles", [(30, 60, -20), (-100, 130, 75)])
def test_fourier_slice_matches_real_space_projection(volume, angles):
    rot = euler_to_matrix(*angles)
    truth = real_space_projection(volume, rot)
    plane = fourier.half_plane(volume.shape[0])
    slc = fourier.project(fourier.pad_fourier(volume), rot[None], plane, plane.count(19))
    image = fourier.half_plane_to_images(slc, plane)[0]
    err = np.abs(image - (truth - truth.mean())).max() / np.abs(truth).max()
    assert err < 0.05


def test_projection_backprojection_round_trip(volume):
    rng = np.random.default_rng(2)
    rots = random_rotations(1500, rng)
    plane = fourier.half_plane(volume.shape[0])
    values = fourier.project(fourier.pad_fourier(volume), rots, plane, plane.count(19))
    rec = backproject.reconstruct(
        values, np.ones(values.shape, np.float32), rots, plane, ssnr_default=1e4
    )
    curve = fsc(rec, volume)
    # the blobs carry signal up to ~shell 10; the round trip must keep it
    assert curve[1:11].min() > 0.97
    assert np.corrcoef(rec.ravel(), volume.ravel())[0, 1] > 0.99


def test_ctf_weighted_backprojection_recovers_volume(volume):
    rng = np.random.default_rng(3)
    rots = random_rotations(1500, rng)
    plane = fourier.half_plane(volume.shape[0])
    count = plane.count(19)
    values = fourier.project(fourier.pad_fourier(volume), rots, plane, count)
    # a CTF-like modulation with zeros at different places per image
    k = plane.radius[:count]
    ctf = np.sin(rng.uniform(0.02, 0.06, (len(rots), 1)) * k[None] ** 2 + 0.1).astype(np.float32)
    rec = backproject.reconstruct(values * ctf, ctf, rots, plane, ssnr_default=1e3)
    assert fsc(rec, volume)[1:11].min() > 0.95


def test_fsc_identical_and_independent_noise():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(32, 32, 32)).astype(np.float32)
    b = rng.normal(size=(32, 32, 32)).astype(np.float32)
    assert np.allclose(fsc(a, a)[1:], 1.0, atol=1e-5)
    curve = fsc(a, b)
    # independent noise: FSC ~ N(0, 1/sqrt(n_voxels_in_shell))
    assert np.abs(curve[3:]).max() < 0.2
    assert abs(curve[3:].mean()) < 0.03
    assert resolution_at(fsc(a, a), 32, 2.0) == pytest.approx(4.0)
    assert resolution_at(curve, 32, 2.0) > 20.0


@pytest.mark.parametrize("group", ["C4", "O"])
def test_symmetrising_on_threads_is_the_same_sum_as_one_by_one(group):
    """The group's operators sampled on --threads threads and summed in their order: the
    very same map as one operator after another; and the map is the group's."""
    from pipeline import backend
    from pipeline.reconstruction.symmetry import symmetrise_volume, symmetry_matrices

    vol = np.random.default_rng(1).standard_normal((24, 24, 24)).astype(np.float32)
    try:
        backend.use("cpu", 1)
        one = np.asarray(symmetrise_volume(vol, group))
        backend.use("cpu", 2)
        two = np.asarray(symmetrise_volume(vol, group))
    finally:
        backend.use("cpu", 1)
    np.testing.assert_array_equal(two, one)
    assert not np.allclose(one, vol)
    # symmetric: a second pass changes it only by the interpolation's blur
    again = np.asarray(symmetrise_volume(one, group))
    assert np.corrcoef(again.ravel(), one.ravel())[0, 1] > 0.9
    assert len(symmetry_matrices(group)) > 1
