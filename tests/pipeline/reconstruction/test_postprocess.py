import numpy as np
import pytest

from pipeline.reconstruction import postprocess, symmetry
from pipeline.reconstruction.search import so3_grid

from .helpers import blob_volume, gaussian_blobs


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


def test_soft_edge_is_given_in_pixels():
    """At 8 Å/px the default 6 Å edge is under one pixel: the mask is nearly binary.
    ``PostprocessOptions.mask_edge_px`` = 3 makes the edge 3 pixels wide."""
    from pipeline.reconstruction.options import PostprocessOptions

    pix = 8.0
    vol = blob_volume(32, np.random.default_rng(3))
    default = PostprocessOptions()
    wide = PostprocessOptions(mask_edge_px=3.0, mask_extend_px=1.5)
    assert default.mask_kwargs(pix)["edge_A"] == 6.0
    assert wide.mask_kwargs(pix)["edge_A"] == 24.0
    assert wide.mask_kwargs(1.0)["edge_A"] == 6.0  # at least 6 Å
    soft = [
        float(np.sum((m > 0.01) & (m < 0.99)))
        for m in (
            postprocess.soft_mask(vol, pix, **opts.mask_kwargs(pix)) for opts in (default, wide)
        )
    ]
    assert soft[1] > 3 * soft[0]


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
    from pipeline.reconstruction.options import AbinitioOptions

    for full, sub in AbinitioOptions().subgroups.items():
        big = symmetry.symmetry_matrices(full)
        for op in symmetry.symmetry_matrices(sub):
            assert np.any(np.all(np.isclose(big, op, atol=1e-9), axis=(1, 2)))


@pytest.mark.parametrize("turn_deg", [27.0, 58.4])
def test_orient_to_group_finds_the_turn_of_a_c4_map_in_the_o_frame(turn_deg):
    """An O-symmetric map turned about z keeps only its C4: its other four-folds leave x
    and y. The search finds the turn back (to 0.2°), and symmetrising with it restores the
    map; symmetrising without it does not."""
    box = 48
    ops = symmetry.symmetry_matrices("O")
    motif = np.array([[12.0, 4.0, 2.0], [7.0, 9.0, -5.0]])
    centres = np.concatenate([m @ ops.transpose(0, 2, 1) for m in motif])  # g·m
    truth = gaussian_blobs(box, centres, 2.0)
    turned = gaussian_blobs(box, centres @ symmetry.about_z(turn_deg).T, 2.0)

    angle, consistency = symmetry.orient_to_group(turned, "C4", "O", 2.0, 8.0)
    error = (angle + turn_deg + 45.0) % 90.0 - 45.0
    assert abs(error) <= 0.2
    assert consistency > 0.99
    assert symmetry.symmetry_consistency(turned, "O", np.eye(3)[None], 2.0, 8.0)[0] < 0.9

    restored = np.asarray(symmetry.symmetrise_volume(turned, "O", rotation=symmetry.about_z(angle)))
    naive = np.asarray(symmetry.symmetrise_volume(turned, "O"))
    assert np.corrcoef(restored.ravel(), truth.ravel())[0, 1] > 0.99
    assert np.corrcoef(naive.ravel(), truth.ravel())[0, 1] < 0.9


def test_orient_to_group_needs_a_cyclic_subgroup():
    with pytest.raises(symmetry.SymmetryError, match="Cn about z"):
        symmetry.orient_to_group(np.zeros((16,) * 3, np.float32), "D2", "O", 2.0, 8.0)


def test_subgroup_abinitio_start_is_turned_when_consistent_and_averaged_as_is_when_not():
    """run._into_full_group turns an O-like C4 map into the O frame before averaging; a
    C4 map that is not O-like is averaged as it is."""
    from pipeline.reconstruction.grids import centre_of_mass_px, shift_volume
    from pipeline.reconstruction.options import AbinitioOptions
    from pipeline.reconstruction.run import _into_full_group

    CONSISTENT_ABINITIO = AbinitioOptions().consistent

    box, rng = 48, np.random.default_rng(4)
    ops = symmetry.symmetry_matrices("O")
    motif = np.array([[12.0, 4.0, 2.0], [7.0, 9.0, -5.0]])
    centres = np.concatenate([m @ ops.transpose(0, 2, 1) for m in motif])
    truth = gaussian_blobs(box, centres, 2.0)
    turned = gaussian_blobs(box, centres @ symmetry.about_z(27.0).T, 2.0)
    start, info = _into_full_group(turned, "C4", "O", 2.0, lambda message: None)
    assert info["consistency"] > 0.95 and abs(info["turn_deg"] - 63.0) <= 0.2
    assert np.corrcoef(start.ravel(), truth.ravel())[0, 1] > 0.99

    c4 = symmetry.symmetry_matrices("C4")
    random_motif = rng.uniform(-14, 14, size=(6, 3))
    only_c4 = gaussian_blobs(
        box, np.concatenate([m @ c4.transpose(0, 2, 1) for m in random_motif]), 2.0
    )
    start, info = _into_full_group(only_c4, "C4", "O", 2.0, lambda message: None)
    assert info["consistency"] < CONSISTENT_ABINITIO and info["turn_deg"] is None
    centred = shift_volume(only_c4, -centre_of_mass_px(only_c4))
    plain = np.asarray(symmetry.symmetrise_volume(centred, "O"))
    assert np.allclose(start, plain, atol=1e-5)


def test_ab_initio_runs_are_compared_and_a_disagreement_is_warned_about():
    """run._attempt_records measures how far each run's refined map agrees with the kept
    one (after alignment: a turned copy of the same map agrees to Nyquist, another map
    does not), and run._warnings warns when a run led elsewhere."""
    from pipeline.reconstruction.options import ReconstructOptions
    from pipeline.reconstruction.refine import RefineResult
    from pipeline.reconstruction.run import _attempt_records, _warnings

    DISAGREEMENT = ReconstructOptions().disagreement

    box, pix = 32, 2.0
    kept = blob_volume(box, np.random.default_rng(5), 20, (1.0, 2.0))
    other = blob_volume(box, np.random.default_rng(6), 20, (1.0, 2.0))
    turned = np.asarray(symmetry.symmetrise_volume(kept, "C1", rotation=symmetry.about_z(40.0)))

    def refined(volume, resolution):
        return RefineResult(None, None, None, (volume, volume), None, resolution)

    results = [refined(turned, 4.5), refined(kept, 4.2), refined(other, 4.4)]
    records = _attempt_records(results, [700.0, 702.0, 560.0], 1, pix)
    assert [r["kept"] for r in records] == [False, True, False]
    assert "agreement_A" not in records[1] and records[2]["fit"] == 560.0
    assert records[0]["agreement_A"] <= 2.5 * pix  # the same map, turned
    assert records[2]["agreement_A"] > DISAGREEMENT * 4.2  # another map
    post, opts = {"resolution_A": 4.2}, ReconstructOptions()
    (warning,) = _warnings({"attempts": records}, post, opts)
    assert (
        "1 of the 3 ab-initio runs" in warning and f"{records[2]['agreement_A']:.1f} Å" in warning
    )
    assert _warnings({"attempts": records[:2]}, post, opts) == []  # runs that agree
    assert _warnings({"symmetry": "C4", "seconds": 3.0}, post, opts) == []  # a single run


def test_a_featureless_shell_is_not_taken_for_a_symmetric_map():
    """A spherical shell is kept by every group; the consistency score must not call it
    O-like (its non-spherical leftover is the voxel lattice's, which is cubic)."""
    box = 48
    g = np.arange(box) - box // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    shell = np.exp(-((r - 14.0) ** 2) / (2 * 2.0**2)).astype(np.float32)
    assert symmetry.symmetry_consistency(shell, "O", np.eye(3)[None], 2.0, 8.0)[0] == 0.0
    noisy = shell + 0.05 * np.random.default_rng(1).normal(size=shell.shape).astype(np.float32)
    assert abs(symmetry.symmetry_consistency(noisy, "O", np.eye(3)[None], 2.0, 8.0)[0]) < 0.2
