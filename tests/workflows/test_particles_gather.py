"""Particle gathering is incremental: a new batch costs reading that batch only."""

from __future__ import annotations

import pandas as pd

import pipeline.io.particles as particles_io
from pipeline.io.particles import ParticleTable, make_optics, write_particles_star
from workflows.particles import gather, snapshot


def _batch(root, name: str, n: int, pixel_size_A: float = 1.0):
    folder = root / name / "extract"
    folder.mkdir(parents=True)
    (folder / "particles.mrcs").write_bytes(b"")
    rows = pd.DataFrame(
        {
            "rlnImageName": [f"{k + 1}@particles.mrcs" for k in range(n)],
            "rlnMicrographName": [f"{name}/mic.mrc"] * n,
            "rlnCoordinateX": [10.0 * k for k in range(n)],
            "rlnCoordinateY": [5.0] * n,
            "rlnOpticsGroup": [1] * n,
            "rlnDefocusU": [12000.0 + k for k in range(n)],
            "rlnDefocusV": [11800.0] * n,
            "rlnDefocusAngle": [30.0] * n,
        }
    )
    path = folder / "particles.star"
    write_particles_star(path, ParticleTable(make_optics(pixel_size_A, 64), rows))
    return path


def test_incremental_gather_reads_only_new_batches_and_equals_a_full_gather(tmp_path, monkeypatch):
    stars = [_batch(tmp_path / "batches", f"b{k:05d}", 3 + k) for k in range(3)]
    out = tmp_path / "particles" / "particles.star"
    assert gather(stars[:2], out) == 7
    reads = []
    original = particles_io.read_particles_star
    monkeypatch.setattr(
        particles_io, "read_particles_star", lambda p: reads.append(str(p)) or original(p)
    )
    assert gather(stars, out) == 12
    assert reads == [str(stars[2])]  # only the new batch was read
    monkeypatch.setattr(particles_io, "read_particles_star", original)
    full = tmp_path / "full" / "particles.star"
    assert gather(stars, full) == 12
    a, b = original(out), original(full)
    pd.testing.assert_frame_equal(a.optics, b.optics)
    # same rows, same stack paths (both STAR files sit one folder below tmp_path)
    pd.testing.assert_frame_equal(a.particles, b.particles)
    # a changed earlier batch, or a new optics group, gathers everything again
    stars.append(_batch(tmp_path / "batches", "b00003", 2, pixel_size_A=2.0))
    assert gather(stars, out) == 14
    assert len(original(out).optics) == 2
    snap = tmp_path / "reconstruct" / "p0000010" / "input_particles.star"
    assert snapshot(out, 10, snap) == 10
