"""A global search again in the local iterations (``RefineOptions.recheck_every``, issue
22): particles on the pseudo-symmetric mate of their pose — where the global iterations
at low resolution put about half of the nearly two-fold symmetric rod's — stay there with
local moves only and come back with the re-check, once the map tells the two apart."""

import numpy as np
import pytest

from pipeline.reconstruction import fourier, refine, search
from pipeline.reconstruction.particles import load_particles
from pipeline.reconstruction.refine_pass import (
    GlobalStep,
    align_and_backproject,
    pose_distance_deg,
)
from pipeline.reconstruction.symmetry import symmetry_matrices
from pipeline.reconstruction.workspace import build_workspace
from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
from pipeline.simulate.volume import gaussian_blobs

#: the two-fold about z in the map's frame: pose A·S views the same symmetric map as A
TWO_FOLD = np.diag([-1.0, -1.0, 1.0])
BOX, PIX = 32, 4.0


def pseudo_two_fold_volume() -> np.ndarray:
    """Blobs and their copies turned 180° about z, and two blobs with no copy: the same
    map at low resolution whichever way round, told apart by the two."""
    rng = np.random.default_rng(5)
    centres = rng.uniform(-6.0, 6.0, (6, 3))
    pairs = np.concatenate([centres, centres @ TWO_FOLD])
    sigmas = np.concatenate([np.full(12, 2.0), [1.2, 1.2]])
    marks = np.array([[5.0, 2.0, 4.0], [-3.0, 5.0, -4.0]])
    return gaussian_blobs(BOX, np.concatenate([pairs, marks]), sigmas)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    vol = pseudo_two_fold_volume()
    images, truth = simulate_particle_stack(vol, 160, PIX, snr=0.5, rng=13)
    star = write_particle_stack(tmp_path_factory.mktemp("recheck"), images, truth)
    particles = load_particles(star)
    ws = build_workspace(particles.images, particles.ctf_params, PIX)
    return vol, ws, truth


def test_pose_distance_is_taken_over_the_point_group():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    a = Rotation.random(5, random_state=1).as_matrix()
    assert np.allclose(pose_distance_deg(a, a @ TWO_FOLD, None), 180.0, atol=1e-4)
    assert np.allclose(pose_distance_deg(a, a @ TWO_FOLD, symmetry_matrices("C2")), 0.0, atol=1e-4)
    b = a @ Rotation.from_rotvec(rng.normal(size=(5, 3)) * 0.1).as_matrix()
    expected = np.degrees(Rotation.from_matrix(np.swapaxes(a, 1, 2) @ b).magnitude())
    assert np.allclose(pose_distance_deg(a, b, None), expected, atol=1e-4)


def _pass(ws, vol, rotations, origins, recheck: bool):
    """One local iteration at 10 Å (box 32, 4 Å/px) against the true map, with or without
    the global re-check; returns the poses and the particles it moved."""
    data = ws.search_data(10.0)
    fgrid = fourier.pad_fourier(vol)
    step = refine.angular_step_deg(ws.radius_px(10.0), BOX / 2)
    moves = [(2 * step, 1.0), (step, 0.5), (step, 0.5), (step / 2, 0.25)]
    g = None
    if recheck:
        grid = search.so3_grid(15.0)
        refs = fourier.project(fgrid, grid, ws.plane, data.count)
        g = GlobalStep(refs, grid, search.shift_grid(1.0, 1.0), True, 1, None, True, 15.0)
    rotations, origins, moved = rotations.copy(), origins.copy(), [0]
    idx = np.arange(ws.n)
    align_and_backproject(
        ws, fgrid, data.count, idx, rotations, origins, moves, 4.0, g,
        backproject=False, moved=moved,
    )  # fmt: skip
    return rotations, origins, moved[0]


def test_recheck_moves_particles_off_the_pseudo_symmetric_mate(case):
    vol, ws, truth = case
    true_rot, true_org = truth.rotations, -truth.shifts_A / PIX
    mate = np.zeros(ws.n, dtype=bool)
    mate[::3] = True  # a third start on the mate
    start = np.where(mate[:, None, None], true_rot @ TWO_FOLD, true_rot)
    # the mate is the same map at low resolution: its projections are close to the true ones
    lowpassed = refine.lowpass(vol, 30.0, PIX)
    from pipeline import backend

    low = fourier.pad_fourier(backend.to_numpy(lowpassed))
    pr = fourier.project(low, true_rot[:4], ws.plane, ws.plane.count(BOX * PIX / 30.0))
    pm = fourier.project(low, true_rot[:4] @ TWO_FOLD, ws.plane, ws.plane.count(BOX * PIX / 30))
    pr, pm = backend.to_numpy(pr), backend.to_numpy(pm)
    assert np.linalg.norm(pr - pm) < 0.2 * np.linalg.norm(pr)

    local_rot, _, local_moved = _pass(ws, vol, start, true_org, recheck=False)
    err_local = pose_distance_deg(local_rot, true_rot, None)
    assert np.mean(err_local[mate] > 20.0) > 0.95  # local moves cannot leave the mate
    assert local_moved == 0

    rot, _, moved = _pass(ws, vol, start, true_org, recheck=True)
    err = pose_distance_deg(rot, true_rot, None)
    assert np.mean(err[mate] > 20.0) < 0.1  # the re-check brings them back
    assert np.mean(err[~mate] > 20.0) < 0.05  # and keeps the others
    assert np.median(err) < 5.0
    assert moved >= 0.9 * mate.sum()


def test_refine_records_the_recheck(case):
    vol, ws, _ = case
    kwargs = {"max_iterations": 3, "global_iterations": 1, "initial_resolution_A": 16.0}
    off = refine.refine(ws, vol, np.random.default_rng(0), **kwargs)
    on = refine.refine(ws, vol, np.random.default_rng(0), recheck_every=2, **kwargs)
    rows = [h for h in on.history if isinstance(h["iteration"], int)]
    assert "recheck_moved" not in rows[1] and "recheck_moved" in rows[2]
    assert all("recheck_moved" not in h for h in off.history)
    # iteration 1 is the same in both
    assert off.history[1]["resolution_A"] == on.history[1]["resolution_A"]
