"""Issue 22: how broad is a particle's posterior over orientations early in ab-initio, and
how much of it do the ``top_k`` best poses hold? (seventh session, 2026-12-07)

For particles of one case (``diagnose_recon_gap.py``'s stack, ``--workdir`` reused) the
full table of whitened correlations over ab-initio's SO(3) grid and shift grid at a
resolution is scored against (a) a random start built as ab-initio builds it (a
mini-batch back-projected at random orientations) and (b) the truth; for temperatures T
the posterior ``exp(noise_scale · max(score, 0)² / 2 / T)`` gives, per particle (median
over ``--particles-scored``): the effective number of poses ``1 / Σ p²``, the mass of the
10 best poses (what ab-initio's ``posterior="top"`` adds), and the mass within two grid
steps of the best orientation.

    python benchmarks/diagnose_posterior_breadth.py --structure pentamer --seed 1 \\
        --workdir /tmp/gap_pentamer_1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def score_table(ws, volume, resolution_A: float, idx: np.ndarray):
    """(grid (R, 3, 3), scores (n, S, R), step°) of particles ``idx`` against ``volume``
    over ab-initio's grids at ``resolution_A`` (as :func:`abinitio.abinitio` builds them)."""
    from pipeline.reconstruction import fourier, search
    from pipeline.reconstruction.symmetry import asymmetric_grid

    step = min(20.0, max(7.5, math.degrees(1.3 / ws.radius_px(resolution_A))))
    grid = asymmetric_grid(search.so3_grid(step), ws.symmetry)
    shifts = search.shift_grid(
        0.06 * ws.box, max(1.0, min(resolution_A / (3 * ws.pixel_size_A), 4.0))
    )
    data = ws.search_data(resolution_A)
    refs = fourier.project(fourier.pad_fourier(volume), grid, ws.plane, data.count)
    count = data.count
    p_cat = np.concatenate([refs.real, refs.imag], axis=-1).astype(np.float32)
    p_pow = (np.abs(refs) ** 2).astype(np.float32)
    phases = fourier.shift_phases(shifts, ws.plane, count)  # (S, K)
    out = []
    for i in idx:
        x, c = data.values[i, :count], data.ctf[i, :count]
        y = np.conj(x[None] * phases) * (c * data.noise_inv[:count])[None]
        cross = np.concatenate([y.real, -y.imag], axis=-1) @ p_cat.T  # (S, R)
        norm = ((c * c) * data.noise_inv[:count]) @ p_pow.T
        out.append(cross / np.sqrt(np.maximum(norm, 1e-30)))
    return grid, np.array(out), step


def breadth(ws, volume, resolution_A: float, idx: np.ndarray, temperatures) -> dict:
    from scipy.spatial.transform import Rotation

    grid, table, step = score_table(ws, volume, resolution_A, idx)
    rots = Rotation.from_matrix(grid)
    rows = []
    for t in temperatures:
        n_eff, top10, near = [], [], []
        for s in table:
            ll = 0.5 * ws.noise_scale * np.maximum(s, 0.0) ** 2 / t
            p = np.exp(ll - ll.max())
            p /= p.sum()
            n_eff.append(1.0 / (p**2).sum())
            top10.append(np.sort(p.ravel())[::-1][:10].sum())
            per_rot = p.sum(axis=0)
            best = int(np.argmax(per_rot))
            angle = np.degrees((rots[best].inv() * rots).magnitude())
            near.append(per_rot[angle < 2 * step].sum())
        rows.append(
            {
                "T": t,
                "n_eff_median": round(float(np.median(n_eff)), 1),
                "top10_mass_median": round(float(np.median(top10)), 3),
                "mass_within_2_steps_median": round(float(np.median(near)), 3),
            }
        )
    return {
        "resolution_A": resolution_A,
        "orientations": len(grid),
        "shifts": table.shape[1],
        "step_deg": round(step, 1),
        "rows": rows,
    }


def main() -> None:
    from benchmarks.diagnose_recon_gap import add_case_arguments, case_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(parser, structure="pentamer")
    parser.add_argument("--particles-scored", type=int, default=40)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rng", type=int, default=5)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from pipeline import backend
    from pipeline.geometry import random_rotations
    from pipeline.reconstruction.grids import change_box, lowpass
    from pipeline.reconstruction.workspace import backproject_weighted

    backend.use("cpu", 2)
    _, volume, ws_full = case_workspace(args)
    ws = ws_full.for_resolution(15.0)  # ab-initio's box
    rng = np.random.default_rng(args.rng)
    idx = rng.choice(ws.n, args.particles_scored, replace=False)
    first = rng.choice(ws.n, 300, replace=False)
    acc = backproject_weighted(ws, first, random_rotations(300, rng), np.zeros((300, 2)), None)
    start = acc.reconstruct(ws.box // 2 - 1, ssnr_default=1.0)
    truth = np.asarray(change_box(volume, ws.box))
    for name, model, res in (
        ("random start", start, 35.0),
        ("truth", truth, 35.0),
        ("truth", truth, 20.0),
    ):
        row = breadth(ws, lowpass(model, res, ws.pixel_size_A), res, idx, args.temperatures)
        print(json.dumps({"model": name, **row}), flush=True)


if __name__ == "__main__":
    main()
