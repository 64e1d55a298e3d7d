import numpy as np
import pytest

from pipeline.geometry import random_rotations
from pipeline.reconstruction import fourier, refine, search
from pipeline.reconstruction.particles import normalise
from pipeline.simulate import particles as simulate

from .helpers import blob_volume, random_search_case, score_table


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = np.einsum("nij,nkj->nik", a, b)
    cos = np.clip((np.trace(m, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return np.degrees(np.arccos(cos))


def test_so3_grid_is_uniform_enough():
    grid = search.so3_grid(15.0)
    probes = random_rotations(200, np.random.default_rng(0))
    # every random rotation has a grid point within about the step
    nearest = np.array(
        [angle_between_deg(grid, np.broadcast_to(p, grid.shape)).min() for p in probes]
    )
    assert nearest.max() < 15.0
    assert np.median(nearest) < 9.0


def test_rotvec_matches_axis_angle():
    r = search.rotvec_to_matrix(np.array([[0, 0, np.pi / 2]]))[0]
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)


@pytest.fixture(scope="module")
def posed_stack():
    """40 noisy (SNR 2) CTF-modulated projections of an asymmetric blob volume with known poses/shifts."""
    from pipeline.ctf_model import CTFParams
    from pipeline.reconstruction.particles import half_plane_ctfs

    rng = np.random.default_rng(7)
    box, pix = 32, 4.0
    vol = blob_volume(box, rng, 30, (1.0, 2.0))
    rots = random_rotations(40, rng)
    origins = rng.uniform(-2, 2, (40, 2))
    plane = fourier.half_plane(box)
    count = plane.count(box // 2 - 1)
    params = [CTFParams(d, d, 0.0) for d in rng.uniform(8000, 20000, 40)]
    ctf = half_plane_ctfs(params, plane, pix)
    values = fourier.project(fourier.pad_fourier(vol), rots, plane, count) * ctf
    # particle at centre + origin: apply the inverse of the re-centring phases
    values = refine.recentre(values, -origins, plane)
    clean = fourier.half_plane_to_images(values, plane)
    noisy = clean + rng.normal(size=clean.shape).astype(np.float32) * np.sqrt(clean.var() / 2.0)
    ws = refine.build_workspace(normalise(noisy), params, pix)
    return vol, rots, origins, ws


def test_global_then_local_search_recovers_known_poses(posed_stack):
    vol, rots, origins, ws = posed_stack
    fgrid = fourier.pad_fourier(vol)
    data = ws.search_data(10.0)
    grid = search.so3_grid(10.0)
    refs = fourier.project(fgrid, grid, ws.plane, data.count)
    idx = np.arange(len(rots))
    best, org, _ = search.global_search(refs, data, idx, search.shift_grid(3.0, 1.0))
    found = grid[best]
    assert np.median(angle_between_deg(found, rots)) < 10.0  # grid spacing 10°
    data = ws.search_data(8.0)
    for step, sstep in [(4, 0.5), (4, 0.5), (2, 0.5), (2, 0.25), (1, 0.25), (0.5, 0.25)]:
        found, org, _ = search.local_search(fgrid, data, idx, found, org, step, sstep)
    err = angle_between_deg(found, rots)
    assert np.median(err) < 2.0
    assert np.mean(err < 5.0) > 0.9
    assert np.median(np.abs(org - origins)) < 0.5


def test_scores_prefer_the_true_pose_over_a_wrong_one(posed_stack):
    vol, rots, origins, ws = posed_stack
    data = ws.search_data(8.0)
    idx = np.arange(len(rots))
    refs_true = fourier.project(fourier.pad_fourier(vol), rots, ws.plane, data.count)
    # a candidate list of [true, 30° away] per particle: true must win for nearly all
    wrong = search.rotvec_to_matrix(np.array([0.0, np.deg2rad(30), 0.0]))[None] @ rots
    refs_wrong = fourier.project(fourier.pad_fourier(vol), wrong, ws.plane, data.count)
    wins = 0
    for i in idx:
        refs = np.stack([refs_true[i], refs_wrong[i]])
        best, _, _ = search.global_search(refs, data, np.array([i]), np.zeros((1, 2)), origins[[i]])
        wins += int(best[0] == 0)
    assert wins >= 0.95 * len(idx)


def test_origin_convention_matches_relion_simulator():
    """rlnOriginX/YAngst (as the simulator writes them) re-centre the particle: our internal
    origin (particle at centre + origin) is its negative."""
    vol = blob_volume(32, np.random.default_rng(0), 20, (1.0, 2.0))
    images, truth = simulate.simulate_particle_stack(
        vol, 12, 4.0, snr=np.inf, rng=1, max_shift_A=8.0
    )
    ws = refine.build_workspace(normalise(images), truth.ctf, 4.0)
    data = ws.search_data(8.0)
    fgrid = fourier.pad_fourier(vol)
    idx = np.arange(12)
    origins = -truth.shifts_A / 4.0
    _, found, right = search.local_search(fgrid, data, idx, truth.rotations, origins, 0.01, 0.25)
    _, _, wrong = search.local_search(fgrid, data, idx, truth.rotations, -origins, 0.01, 0.25)
    assert np.all(right > wrong)
    assert right.mean() > 3 * max(wrong.mean(), 1e-6)
    assert np.abs(found - origins).max() <= 0.25 + 1e-9


def test_particle_fit_prefers_the_refinement_from_the_truth():
    """The particles fit the map refined from the truth better than the map refined from
    an unrelated volume (how ab-initio runs are chosen between, for point group O)."""
    vol = blob_volume(32, np.random.default_rng(5), 20, (1.0, 2.0))
    wrong = blob_volume(32, np.random.default_rng(6), 20, (1.0, 2.0))
    images, truth = simulate.simulate_particle_stack(vol, 200, 4.0, snr=0.5, rng=2)
    ws = refine.build_workspace(normalise(images), truth.ctf, 4.0)
    right_score, wrong_score = (
        refine.particle_fit(
            ws, refine.refine(ws, start, np.random.default_rng(0), max_iterations=2)
        )
        for start in (vol, wrong)
    )
    assert right_score > 1.05 * wrong_score


def test_refinement_marches_its_search_resolution():
    """The half-map FSC of these particles reaches far beyond 30 Å after the first
    iteration, but the search radius grows by at most refine.march_px per iteration; the
    default cap leaves time to march to Nyquist."""
    vol = blob_volume(32, np.random.default_rng(5), 20, (1.0, 2.0))
    images, truth = simulate.simulate_particle_stack(vol, 200, 4.0, snr=0.5, rng=2)
    ws = refine.build_workspace(normalise(images), truth.ctf, 4.0)
    result = refine.refine(ws, vol, np.random.default_rng(0), max_iterations=4)
    radii = [ws.radius_px(h["search_resolution_A"]) for h in result.history]
    assert radii[0] == pytest.approx(ws.radius_px(30.0))
    assert ws.radius_px(result.history[0]["resolution_A"]) > radii[0] + refine.march_px(radii[0])
    for before, after in zip(radii, radii[1:], strict=False):
        assert 0 < after - before <= refine.march_px(before) + 1e-9
    assert refine.default_iterations(64, 3.0, 30.0) == 11  # 6.4 px to 31 px in 7 steps, + 1 + 3
    assert refine.default_iterations(256, 0.83, 30.0) == 19


def test_sampled_poses_follow_the_posterior_over_every_pose():
    """``global_search(sample=k)`` draws each particle's poses from its posterior over the
    whole (reference, origin) table, ``exp(log_scale · max(score, 0)²)`` normalised: the
    draws' frequencies match it; with a sharp posterior every draw is the best pair."""
    data, refs, values, ctf = random_search_case(np.random.default_rng(7), 3, 12)
    shifts = search.shift_grid(1.0, 1.0)
    phases = fourier.shift_phases(shifts, data.plane, data.count)
    n_draw, log_scale = 6000, 0.05
    r, o, s = search.global_search(
        refs, data, np.arange(3), shifts, sample=n_draw, log_scale=log_scale,
        rng=np.random.default_rng(1),
    )  # fmt: skip
    assert r.shape == (3, n_draw) and o.shape == (3, n_draw, 2)
    for i in range(3):
        table = score_table(values[i], ctf[i], refs, phases)  # (R, S)
        ll = log_scale * np.maximum(table, 0) ** 2
        p = np.exp(ll - ll.max())
        p /= p.sum()
        assert 1.0 / (p**2).sum() > 5  # a broad posterior: many poses drawn
        s_idx = np.array([np.flatnonzero(np.all(np.isclose(shifts, q), axis=1))[0] for q in o[i]])
        freq = np.bincount(r[i] * len(shifts) + s_idx, minlength=p.size) / n_draw
        assert 0.5 * np.abs(freq - p.ravel()).sum() < 0.05  # total variation
        assert np.all(np.diff(s[i]) <= 1e-6)  # highest score first
    sharp_r, sharp_o, _ = search.global_search(
        refs, data, np.arange(3), shifts, sample=5, log_scale=1e4, rng=np.random.default_rng(2)
    )
    best_r, best_o, _ = search.global_search(refs, data, np.arange(3), shifts)
    assert np.all(sharp_r == best_r[:, None])
    np.testing.assert_allclose(sharp_o, np.repeat(best_o[:, None], 5, axis=1))
