"""Particles read in chunks from memory-mapped stacks, Fourier-cropped workspaces, the
STAR reader's required columns (CONTRACT: only rlnImageName, the CTF columns and the
optics table), and progress reporting."""

import json

import numpy as np
import pytest
import starfile

from pipeline.reconstruction import fourier, grids
from pipeline.reconstruction.particles import load_particles
from pipeline.reconstruction.workspace import build_workspace
from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack

from .helpers import blob_volume, random_search_case, score_table


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("stack")
    volume = blob_volume(48, np.random.default_rng(2), 12, (1.5, 3.0))
    images, truth = simulate_particle_stack(volume, 40, 2.0, snr=1.0, rng=5)
    return write_particle_stack(d, images, truth), volume, truth


def test_images_are_read_on_demand_and_match_a_full_read(stack):
    star, _, _ = stack
    particles = load_particles(star)
    assert not isinstance(particles.images, np.ndarray)  # a lazy, memory-mapped source
    everything = np.asarray(particles.images)
    assert everything.shape == (40, 48, 48)
    np.testing.assert_allclose(particles.images[5:9], everything[5:9], atol=1e-5)
    np.testing.assert_allclose(particles.images[7], everything[7], atol=1e-5)
    # chunk size does not change the workspace
    a = build_workspace(particles.images, particles.ctf_params, 2.0, chunk=7)
    b = build_workspace(everything, particles.ctf_params, 2.0, chunk=512)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("small", [16, 24, 32])
def test_cropped_workspace_matches_projections_of_the_map_at_that_box(small):
    """Images cropped to a smaller box are the projections, at that box, of the map
    brought to that box (grids.change_box): the two scalings agree."""
    box = 48
    volume = blob_volume(box, np.random.default_rng(3), 10, (2.0, 3.5))
    rng = np.random.default_rng(0)
    from pipeline.geometry import random_rotations
    from pipeline.reconstruction.workspace import Workspace

    rotations = random_rotations(6, rng)
    plane = fourier.half_plane(box)
    values = fourier.project(fourier.pad_fourier(volume), rotations, plane, plane.kx.size)
    k = plane.kx.size
    ws = Workspace(values, np.ones((6, k), np.float32), np.ones(k, np.float32), plane, 2.0).cropped(
        small
    )
    assert ws.box == small and ws.pixel_size_A == pytest.approx(2.0 * box / small)
    expected = fourier.project(
        fourier.pad_fourier(grids.change_box(volume, small)), rotations, ws.plane, ws.plane.kx.size
    )
    err = np.linalg.norm(np.asarray(ws.values) - expected) / np.linalg.norm(expected)
    assert err < 0.03
    # the physical frequency of every cropped pixel is the same: radius_px is invariant
    assert ws.radius_px(20.0) == pytest.approx(box * 2.0 / 20.0)


def test_change_box_round_trip_keeps_the_low_resolution_map():
    volume = blob_volume(48, np.random.default_rng(4), 10, (2.5, 4.0))
    there = grids.change_box(grids.change_box(volume, 24), 48)
    low = np.asarray(grids.lowpass(volume, 48 * 2.0 / 10.0, 2.0, width_px=0.01))
    assert np.corrcoef(np.asarray(there).ravel(), low.ravel())[0, 1] > 0.99
    assert float(np.asarray(there).sum()) == pytest.approx(float(volume.sum()), rel=0.02)


def test_star_without_coordinates_or_micrograph_names_is_read(stack, tmp_path):
    """A RELION 3.1 particles STAR with only rlnImageName, the CTF columns and optics."""
    star, _, _ = stack
    data = starfile.read(star)
    parts = data["particles"]
    keep = ["rlnImageName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]
    data["particles"] = parts[keep]
    bare = star.parent / "bare.star"
    starfile.write(data, bare)
    particles = load_particles(bare)
    assert len(particles) == 40
    np.testing.assert_allclose(
        np.asarray(particles.images), np.asarray(load_particles(star).images), atol=1e-6
    )
    # and still refused without the CTF
    data["particles"] = parts[["rlnImageName", "rlnDefocusU"]]
    starfile.write(data, star.parent / "noctf.star")
    from pipeline.reconstruction.particles import ParticleInputError

    with pytest.raises(ParticleInputError, match="rlnDefocusV"):
        load_particles(star.parent / "noctf.star")


def test_progress_goes_to_the_file_and_the_log(tmp_path):
    from pipeline.reconstruction.progress import Progress, report

    lines = []
    tracker = Progress(tmp_path, sink=lines.append, min_interval_s=0.0)
    say = tracker.stage("load")
    report(say, "reading", 0.5)
    state = json.loads((tmp_path / "progress.json").read_text())
    assert state["stage"] == "load" and state["stage_fraction"] == 0.5
    say = tracker.stage("refine")
    report(say, "refine iteration 3", 0.5)
    state = json.loads((tmp_path / "progress.json").read_text())
    assert state["stage"] == "refine" and 0.4 < state["fraction"] < 0.8
    assert any("refine iteration 3" in line and "[refine 50%]" in line for line in lines)
    tracker.finish()
    assert json.loads((tmp_path / "progress.json").read_text())["fraction"] == 1.0
    # a plain callable gets the message alone
    got = []
    report(got.append, "hello", 0.3)
    assert got == ["hello"]


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_mask_corrected_fsc_removes_the_correlation_the_mask_makes(seed):
    """Independent noise half-maps around a shared 8 Å signal: a tight solvent mask made
    from the maps makes their masked FSC claim more than there is; the phase-randomised
    correction (Chen et al. 2013) brings the claim back to the unmasked maps' (within 20 %)."""
    from pipeline.reconstruction.fsc import mask_corrected_fsc, resolution_at
    from pipeline.reconstruction.postprocess import soft_mask

    box, pix = 48, 2.0
    rng = np.random.default_rng(seed)
    signal = np.asarray(grids.lowpass(blob_volume(box, rng, 10, (1.5, 3.0)), 8.0, pix))
    signal /= signal.std()
    h1 = signal + rng.normal(size=signal.shape).astype(np.float32)
    h2 = signal + rng.normal(size=signal.shape).astype(np.float32)
    mask = soft_mask(0.5 * (h1 + h2), pix, extend_A=0.0, edge_A=3.0)
    corrected, masked, unmasked, shell = mask_corrected_fsc(h1, h2, mask, rng)
    res = {
        name: resolution_at(curve, box, pix, 0.143)
        for name, curve in [("corrected", corrected), ("masked", masked), ("unmasked", unmasked)]
    }
    assert res["masked"] < 0.95 * res["corrected"]  # the mask alone inflates the claim
    beyond = slice(int(box * pix / res["unmasked"]) + 2, box // 2)  # no signal there
    assert np.mean(masked[beyond]) > np.mean(corrected[beyond]) + 0.05
    assert abs(res["corrected"] - res["unmasked"]) <= 0.2 * res["unmasked"]
    np.testing.assert_allclose(corrected[: shell + 3], masked[: shell + 3])


def test_a_streamed_workspace_searches_and_reconstructs_as_a_resident_one(stack):
    """Values and CTFs computed from the stack on disk for each batch (over resident_MB)
    give the same global search, local search and back-projection as arrays in memory;
    the chunk size changes nothing but memory."""
    from pipeline.geometry import random_rotations
    from pipeline.reconstruction import search
    from pipeline.reconstruction.workspace import StreamedStack, backproject_particles

    star, volume, _ = stack
    particles = load_particles(star)
    resident = build_workspace(particles.images, particles.ctf_params, 2.0)
    # 0.2 MB holds the 40 particles' values and CTFs at box 24, not at 48
    streamed = build_workspace(
        particles.images, particles.ctf_params, 2.0, chunk=7, resident_MB=0.2
    )
    assert not resident.streamed and streamed.streamed
    assert isinstance(streamed.values, StreamedStack)
    np.testing.assert_allclose(streamed.noise_inv, resident.noise_inv, rtol=1e-5)
    idx = np.array([0, 3, 3, 17, 39])
    np.testing.assert_allclose(streamed.values[idx, :50], resident.values[idx, :50], atol=1e-4)
    for box in (48, 24):
        a, b = resident.cropped(box), streamed.cropped(box)
        assert b.streamed == (box == 48)  # made resident where it fits the budget
        grid = search.so3_grid(30.0)
        da, db = a.search_data(8.0), b.search_data(8.0)
        fgrid = fourier.pad_fourier(grids.change_box(volume, box))
        refs = fourier.project(fgrid, grid, a.plane, da.count)
        sel = np.arange(particles.images.shape[0])
        shifts = search.shift_grid(2.0, 1.0)
        ra = search.global_search(refs, da, sel, shifts, top_k=3)
        rb = search.global_search(refs, db, sel, shifts, top_k=3)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_allclose(ra[2], rb[2], rtol=1e-4)
        rots = random_rotations(len(sel), np.random.default_rng(1))
        la = search.local_search(fgrid, da, sel, rots, np.zeros((len(sel), 2)), 5.0, 1.0)
        lb = search.local_search(fgrid, db, sel, rots, np.zeros((len(sel), 2)), 5.0, 1.0)
        np.testing.assert_allclose(la[0], lb[0], atol=1e-6)
        origins = np.zeros((len(sel), 2))
        ma = backproject_particles(a, sel, rots, origins).reconstruct(box // 2 - 1)
        mb = backproject_particles(b, sel, rots, origins).reconstruct(box // 2 - 1)
        np.testing.assert_allclose(mb, ma, atol=1e-5 * float(np.abs(ma).max()))


def test_global_search_top_k_is_the_k_best_pairs_of_all_scores():
    """The top-k selection (orientations by their best shift first) returns exactly the k
    best (orientation, shift) pairs of the full score table, best first."""
    from pipeline.reconstruction import search

    data, refs, values, ctf = random_search_case(np.random.default_rng(4), 5, 40)
    shifts = search.shift_grid(1.0, 1.0)
    best_r, best_o, best = search.global_search(refs, data, np.arange(5), shifts, top_k=6)
    phases = fourier.shift_phases(shifts, data.plane, data.count)  # (S, K)
    for i in range(5):
        table = score_table(values[i], ctf[i], refs, phases)  # (R, S)
        expect = np.sort(table.ravel())[::-1][:6]
        np.testing.assert_allclose(best[i], expect, rtol=1e-4)
        for j in range(6):
            s = np.flatnonzero(np.all(np.isclose(shifts, best_o[i, j]), axis=1))[0]
            assert table[best_r[i, j], s] == pytest.approx(best[i, j], rel=1e-4)


def test_a_truncated_stack_is_refused_with_its_name(stack, tmp_path):
    import shutil

    from pipeline.reconstruction.particles import ParticleInputError

    star, _, _ = stack
    copy = tmp_path / "copy"
    shutil.copytree(star.parent, copy)
    mrcs = next(copy.glob("*.mrcs"))
    with open(mrcs, "r+b") as handle:
        handle.truncate(mrcs.stat().st_size - 4 * 48 * 48 * 3)
    with pytest.raises(ParticleInputError, match=f"{mrcs.name}: truncated"):
        load_particles(copy / star.name)


@pytest.mark.slow
def test_a_whole_reconstruction_streaming_from_disk_equals_one_in_memory(tmp_path):
    """``cryofac reconstruct`` with no memory for particle data (every batch read again
    from the stack, 7 images at a time) writes the same half-maps and poses as with the
    particles in memory."""
    import dataclasses

    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction.options import (
        AbinitioOptions,
        Class2DOptions,
        ReconstructOptions,
        RefineOptions,
    )
    from pipeline.reconstruction.run import run_reconstruction

    volume = blob_volume(32, np.random.default_rng(5), 10, (1.5, 3.0))
    images, truth = simulate_particle_stack(volume, 80, 4.0, snr=0.5, rng=9)
    star = write_particle_stack(tmp_path / "stack", images, truth)
    options = ReconstructOptions(
        seed=3,
        class2d=Class2DOptions(n_classes=2, iterations=2),
        abinitio=AbinitioOptions(iterations=4, n_starts=1, batch_size=30),
        refine=RefineOptions(max_iterations=2, global_iterations=1),
    )
    streamed = dataclasses.replace(options, resident_MB=0.0, chunk=7)
    a = run_reconstruction(star, tmp_path / "memory", options)
    b = run_reconstruction(star, tmp_path / "disk", streamed)
    assert a["resolution_A"] == pytest.approx(b["resolution_A"], rel=1e-3)
    for name in ("half1.mrc", "half2.mrc"):
        ma, mb = read_mrc(tmp_path / "memory" / name)[0], read_mrc(tmp_path / "disk" / name)[0]
        np.testing.assert_allclose(mb, ma, atol=1e-3 * float(np.abs(ma).max()))
    pa = starfile.read(tmp_path / "memory" / "particles.star")["particles"]
    pb = starfile.read(tmp_path / "disk" / "particles.star")["particles"]
    np.testing.assert_allclose(pa["rlnAngleTilt"], pb["rlnAngleTilt"], atol=0.05)
