import numpy as np
import pytest

from pipeline.reconstruction import postprocess, symmetry
from pipeline.reconstruction.search import so3_grid

from .helpers import blob_volume


def blur(volume: np.ndarray, pixel_size_A: float, b_A2: float) -> np.ndarray:
    box = volume.shape[0]
    k = np.fft.fftfreq(box, d=pixel_size_A)
    kx = np.fft.rfftfreq(box, d=pixel_size_A)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2
    spectrum = np.fft.rfftn(volume) * np.exp(-b_A2 * k2 / 4)
    return np.fft.irfftn(spectrum, s=volume.shape, axes=(0, 1, 2))


@pytest.mark.parametrize("b_true", [60.0, 150.0])
def test_guinier_bfactor_recovers_known_blur(b_true):
    rng = np.random.default_rng(0)
    # white noise: a flat amplitude spectrum, so the fitted B is the applied one
    vol = blur(rng.normal(size=(48, 48, 48)), 1.5, b_true).astype(np.float32)
    b = postprocess.guinier_bfactor(vol, 1.5, fit_from_A=10.0, fit_to_A=4.0)
    assert b == pytest.approx(b_true, rel=0.1)
    sharpened = postprocess.sharpen(vol, 1.5, b, resolution_A=3.0)
    assert abs(postprocess.guinier_bfactor(np.asarray(sharpened), 1.5, 10.0, 4.0)) < 0.15 * b_true


def test_fsc_weight_limits():
    w = postprocess.fsc_weight(np.array([1.0, 0.5, 0.0, -0.2]))
    assert w[0] == pytest.approx(1.0)
    assert w[1] == pytest.approx(np.sqrt(2 / 3))
    assert w[2] == 0 and w[3] == 0


def test_soft_mask_covers_particle_and_not_corners():
    vol = blob_volume(40, np.random.default_rng(3))
    mask = postprocess.soft_mask(vol, 3.0)
    assert mask.min() >= 0 and mask.max() <= 1
    assert mask[vol > 0.5 * vol.max()].min() == pytest.approx(1.0)
    assert mask[0, 0, 0] == 0
    assert np.mean((mask > 0) & (mask < 1)) > 0  # a soft edge exists


def test_symmetry_groups_and_asymmetric_unit():
    for name, order in [("C1", 1), ("C5", 5), ("D3", 6), ("T", 12), ("O", 24)]:
        ops = symmetry.symmetry_matrices(name)
        assert len(ops) == order
        # closed under multiplication
        for a in ops[: min(order, 6)]:
            for b in ops:
                assert np.any(np.all(np.isclose(ops, a @ b, atol=1e-9), axis=(1, 2)))
    grid = so3_grid(10.0)
    kept = symmetry.asymmetric_grid(grid, "O")
    assert len(kept) == pytest.approx(len(grid) / 24, rel=0.15)
    with pytest.raises(symmetry.SymmetryError):
        symmetry.symmetry_matrices("Q2")


def test_symmetrise_volume_imposes_cn():
    rng = np.random.default_rng(5)
    vol = rng.normal(size=(32, 32, 32)).astype(np.float32)
    sym = np.asarray(symmetry.symmetrise_volume(vol, "C4"))
    # rotating by 90° about z ((x, y) -> (-y, x)) leaves it unchanged, up to interpolation
    c = 16
    rotated = np.empty_like(sym)
    idx = np.arange(32) - c
    yy, xx = np.meshgrid(idx, idx, indexing="ij")
    src_x, src_y = (yy + c) % 32, (-xx + c) % 32
    rotated = sym[:, src_y, src_x]
    inside = np.hypot(xx, yy) < 12
    assert np.corrcoef(rotated[:, inside].ravel(), sym[:, inside].ravel())[0, 1] > 0.9
    assert np.corrcoef(sym.ravel(), vol.ravel())[0, 1] < 0.7


def test_abinitio_subgroup_is_a_subgroup():
    """Ab-initio for O runs in C4; every C4 operation is one of O's (same frame), so the
    C4 map can be symmetrised to O. Other groups are kept."""
    assert symmetry.abinitio_symmetry("O") == symmetry.abinitio_symmetry(" o ") == "C4"
    for name in ("C1", "C4", "D2", "T"):
        assert symmetry.abinitio_symmetry(name.lower()) == name
    for full, sub in symmetry.ABINITIO_SUBGROUP.items():
        big = symmetry.symmetry_matrices(full)
        for op in symmetry.symmetry_matrices(sub):
            assert np.any(np.all(np.isclose(big, op, atol=1e-9), axis=(1, 2)))
