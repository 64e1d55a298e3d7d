"""One read per batch in a refinement iteration (refine_pass): the same poses and maps as
the searches and the back-projection run one after the other, each particle read from
disk once per half-pass, and streamed refinement equal to resident refinement."""

import numpy as np
import pytest

from pipeline.reconstruction import fourier, grids, refine, search, workspace
from pipeline.reconstruction.particles import load_particles
from pipeline.reconstruction.refine_pass import GlobalStep, SoftPoses, align_and_backproject
from pipeline.reconstruction.workspace import backproject_particles, build_workspace
from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack

from .helpers import blob_volume


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("pass")
    volume = blob_volume(32, np.random.default_rng(2), 10, (1.5, 3.0))
    images, truth = simulate_particle_stack(volume, 300, 4.0, snr=0.5, rng=11)
    star = write_particle_stack(d, images, truth)
    return load_particles(star), volume


def _step_by_step(ws, fgrid, count, idx, rotations, origins, moves, clip, step):
    """The searches and the back-projection one after the other (the code before)."""
    rotations, origins = rotations.copy(), origins.copy()
    if step is not None:
        best, org, _ = search.global_search(
            step.refs, search.SearchData(ws.values, ws.ctf, ws.noise_inv, ws.plane, count), idx, step.shifts_px,
            origins[idx] if step.centred else None,
        )  # fmt: skip
        rotations[idx], origins[idx] = step.grid[best], org
    for step_deg, sstep in moves:
        r, o, _ = search.local_search(
            fgrid,
            search.SearchData(ws.values, ws.ctf, ws.noise_inv, ws.plane, count),
            idx,
            rotations[idx],
            origins[idx],
            step_deg,
            sstep,
        )
        rotations[idx], origins[idx] = r, o
    origins[idx] = np.clip(origins[idx], -clip, clip)
    return rotations, origins, backproject_particles(ws, idx, rotations, origins)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_global", [False, True])
def test_one_pass_gives_the_poses_and_map_of_the_steps_one_after_the_other(
    stack, threads, with_global
):
    from pipeline import backend

    particles, volume = stack
    backend.use("cpu", threads)
    try:
        ws = build_workspace(particles.images, particles.ctf_params, 4.0)
        idx = np.sort(np.random.default_rng(0).choice(ws.n, 290, replace=False))
        fgrid = fourier.pad_fourier(grids.lowpass(volume, 12.0, 4.0))
        count = ws.plane.count(ws.radius_px(12.0))
        rng = np.random.default_rng(1)
        from pipeline.geometry import random_rotations

        rotations = random_rotations(ws.n, rng)
        origins = rng.uniform(-1, 1, (ws.n, 2))
        step = None
        if with_global:
            grid = search.so3_grid(30.0)
            refs = fourier.project(fgrid, grid, ws.plane, count)
            step = GlobalStep(refs, grid, search.shift_grid(1.0, 1.0), True)
        moves = [(10.0, 1.0), (5.0, 0.5), (2.5, 0.25)]
        r0, o0, bp0 = _step_by_step(ws, fgrid, count, idx, rotations, origins, moves, 1.5, step)
        r1, o1 = rotations.copy(), origins.copy()
        bp1 = align_and_backproject(ws, fgrid, count, idx, r1, o1, moves, 1.5, step)
        np.testing.assert_array_equal(r1, r0)
        np.testing.assert_array_equal(o1, o0)
        assert not np.array_equal(r1[idx], rotations[idx])  # the pass did move the poses
        m0, m1 = bp0.reconstruct(15), bp1.reconstruct(15)
        np.testing.assert_array_equal(m1, m0)
    finally:
        backend.use("cpu", 1)


def test_soft_poses_are_filled_and_weight_the_back_projection(stack):
    particles, volume = stack
    ws = build_workspace(particles.images, particles.ctf_params, 4.0)
    idx = np.arange(ws.n)
    fgrid = fourier.pad_fourier(grids.lowpass(volume, 12.0, 4.0))
    count = ws.plane.count(ws.radius_px(12.0))
    grid = search.so3_grid(30.0)
    refs = fourier.project(fgrid, grid, ws.plane, count)
    moves = [(7.5, 0.5)]
    maps = []
    for k in (1, 4):
        rot, org = np.tile(np.eye(3), (ws.n, 1, 1)), np.zeros((ws.n, 2))
        soft = SoftPoses(np.zeros((ws.n, k, 3, 3)), np.zeros((ws.n, k, 2)), np.zeros((ws.n, k)))
        step = GlobalStep(refs, grid, search.shift_grid(2.0, 1.0), False, k)
        bp = align_and_backproject(
            ws, fgrid, count, idx, rot, org, moves, 3.0, step, soft if k > 1 else None
        )
        maps.append(bp.reconstruct(15))
    # the first soft pose is the polished best pose; scores best first
    np.testing.assert_array_equal(soft.rotations[:, 0], rot)
    assert (np.diff(soft.scores[:, 1:], axis=1) <= 1e-6).all()
    assert (np.abs(soft.origins_px) <= 3.0).all()
    assert not np.allclose(maps[0], maps[1])


def test_a_streamed_refinement_reads_each_particle_once_per_iteration(stack, monkeypatch):
    """Streamed, every batch's images are read (and Fourier-transformed) once per
    iteration for all the local moves and the back-projection — five times before —
    and the poses and half-maps are the resident refinement's."""
    particles, volume = stack
    reads = []
    original = workspace.ParticleSource.values

    def counted(self, rows, plane, count):
        reads.append(len(rows))
        return original(self, rows, plane, count)

    monkeypatch.setattr(workspace.ParticleSource, "values", counted)
    kwargs = dict(max_iterations=3, global_iterations=1, grow_box=False)
    resident = build_workspace(particles.images, particles.ctf_params, 4.0)
    a = refine.refine(resident, volume, np.random.default_rng(3), **kwargs)
    streamed = build_workspace(particles.images, particles.ctf_params, 4.0, resident_MB=0.0)
    assert streamed.streamed
    reads.clear()
    its = []
    b = refine.refine(
        streamed,
        volume,
        np.random.default_rng(3),
        **kwargs,
        callback=lambda it, *_: its.append(sum(reads)),
    )
    assert len(its) == 3
    per_iteration = np.diff([0, *its])
    assert (per_iteration == streamed.n).all()
    # streamed values come from scipy's float32 FFT, resident ones from numpy's: equal
    # to ~1e-6, so poses agree to a fraction of a degree and the maps to 1e-3
    assert np.abs(b.rotations - a.rotations).max() < 1e-2
    for ha, hb in zip(a.half_maps, b.half_maps, strict=True):
        np.testing.assert_allclose(hb, ha, atol=1e-3 * float(np.abs(ha).max()))


def test_refinement_reports_its_progress_within_each_iteration(stack):
    """A refinement iteration over many particles shows how far it is: a line at every
    tenth of each half's particles and the stage's fraction rising batch by batch."""
    particles, volume = stack
    ws = build_workspace(particles.images, particles.ctf_params, 4.0)
    seen: list[tuple[str | None, float | None]] = []

    class Collect:
        takes_fraction = True

        def __call__(self, message=None, fraction=None):
            seen.append((message, fraction))

    refine.refine(
        ws, volume, np.random.default_rng(3), max_iterations=2, global_iterations=1,
        grow_box=False, progress=Collect(),
    )  # fmt: skip
    lines = [m for m, _ in seen if m and "particles" in m]
    for it in (0, 1):
        totals = []
        for half in (1, 2):
            mine = [m for m in lines if m.startswith(f"refine iteration {it}, half {half}:")]
            assert mine, lines
            done, total = mine[-1].split(": ")[1].split(" ")[0].replace(",", "").split("/")
            assert done == total  # the half's pass reported to its end
            totals.append(int(total))
        assert sum(totals) == ws.n
    fractions = [f for _, f in seen if f is not None]
    assert len(fractions) > 2 * 2  # per half-pass, not only per iteration
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:], strict=False))
    assert max(fractions) <= 1.0
