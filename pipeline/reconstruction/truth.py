"""Scoring a reconstruction against a known (simulated) truth, for benchmarks and tests.

- :func:`true_pose_resolution`: the same particles back-projected at their TRUE poses,
  FSC against the truth at 0.5 inside a soft sphere — the best the particles allow;
- :func:`found_resolution`: a run's half-maps averaged, aligned to the truth (turn,
  shift, hand), FSC against the truth at 0.5 inside the same sphere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import backend
from pipeline.reconstruction.fsc import fsc, resolution_at
from pipeline.reconstruction.grids import soft_sphere


def _sphere(box: int) -> np.ndarray:
    return backend.to_numpy(soft_sphere(box, 0.45 * box))


def true_pose_resolution(star, truth, volume: np.ndarray, symmetry: str = "C1") -> float:
    """Resolution (Å, FSC 0.5 against ``volume``) of the particles of ``star`` (read as
    ``cryofac reconstruct`` reads them) at their true poses (``truth``: a
    :class:`pipeline.simulate.particles.ParticleStackTruth`)."""
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import backproject_particles, build_workspace

    particles = load_particles(star)
    pixel_size_A = particles.pixel_size_A
    ws = build_workspace(particles.images, particles.ctf_params, pixel_size_A, symmetry)
    idx = np.arange(ws.n)
    origins = -truth.shifts_A / pixel_size_A  # rlnOriginX = −(particle offset)
    halves = [
        backproject_particles(ws, h, truth.rotations, origins).reconstruct(
            ws.box // 2 - 1, ssnr_default=1.0
        )
        for h in (idx[::2], idx[1::2])
    ]
    curve = fsc(halves[0], halves[1])
    whole = backproject_particles(ws, idx, truth.rotations, origins).reconstruct(
        ws.box // 2 - 1, fsc=curve
    )
    true_map = backend.to_numpy(whole)
    return resolution_at(fsc(true_map * _sphere(ws.box), volume), ws.box, pixel_size_A, 0.5)


def found_resolution(out_dir: Path, volume: np.ndarray, pixel_size_A: float) -> tuple[float, bool]:
    """Resolution (Å, FSC 0.5 against ``volume``) of a run's averaged half-maps after
    alignment, and whether the hand had to be flipped."""
    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction.align import align_maps, apply_alignment

    out = Path(out_dir)
    found = 0.5 * (read_mrc(out / "half1.mrc")[0] + read_mrc(out / "half2.mrc")[0])
    alignment = align_maps(found, volume, pixel_size_A)
    aligned = apply_alignment(found, alignment)
    box = found.shape[0]
    res = resolution_at(fsc(aligned * _sphere(box), volume), box, pixel_size_A, 0.5)
    return res, bool(alignment.flipped)
