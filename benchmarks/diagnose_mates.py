"""Are the particles a refinement leaves far (> 20°) from their true pose on a wrong
pose, or on a symmetry mate of the structure (issue 22, rod 2026-12-07)?

Reads a run of ``diagnose_recon_gap.py refine --tag TAG`` (``WORKDIR/TAG.npz``, the
stack's ``truth.npz``) and prints:

- ``mate``: the rotation S (``found ≈ true · S``) shared by the far particles (chordal
  mean) and their spread around it;
- ``self_fsc``: the truth against itself turned by S (after alignment: turn, shift):
  FSC 0.5 / 0.143 at Nyquist means the structure is symmetric under S there, and a
  particle at true · S is as right as one at its true pose;
- ``errors_mod_mate``: each particle's angular error to the nearer of true and true · S;
- per resolution, over every ``--every``-th particle, each pose polished by local moves:
  ``truth_prefers_true``: the fraction scoring higher at the true pose than at true · S
  against the noiseless truth (0.5: nothing in the map tells them apart); ``own_half``
  and ``other_half``: the fraction scoring higher at the found pose than at found · S
  against the particle's own half-map and against the other half's (a particle's own
  image in its half-map favours the pose it was inserted at).

    nice -n 10 python benchmarks/diagnose_mates.py --structure rod --workdir W --tag before
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _angle(m: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((np.trace(m, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def _mean_rotation(mats: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(mats.mean(axis=0))
    if np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1
    return u @ vt


def _polished_scores(fgrid, data, idx, rotations, origins):
    from pipeline.reconstruction import search

    rot, org = rotations, origins
    for step, shift in [(2.0, 0.5), (1.0, 0.5), (0.5, 0.25)]:
        rot, org, score = search.local_search(fgrid, data, idx, rot, org, step, shift)
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tag", default="refine")
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--pixel", type=float, default=1.5)
    parser.add_argument("--resolutions", default="12,8", help="Å, comma-separated")
    parser.add_argument("--every", type=int, default=5, help="score every n-th particle")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from scipy.ndimage import affine_transform

    from pipeline import backend

    backend.use("cpu", args.threads)
    from pipeline.reconstruction import fourier
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.particles import ParticleStackTruth

    d = np.load(args.workdir / "truth.npz")
    truth = ParticleStackTruth(
        d["eulers_deg"], d["shifts_A"], d["du"], d["dv"], d["angle"],
        float(d["pixel_size_A"]), float(d["snr"]),
    )  # fmt: skip
    run = np.load(args.workdir / f"{args.tag}.npz")
    true_rot, found, origins, halves = (
        truth.rotations, run["rotations"], run["origins_px"], run["halves"]
    )  # fmt: skip
    rel = np.swapaxes(true_rot, 1, 2) @ found  # found = true · G_i
    far = _angle(rel) > 20.0
    out: dict = {"structure": args.structure, "tag": args.tag, "far": round(float(far.mean()), 3)}
    if far.sum() < 10:
        print(json.dumps(out))
        return
    mate = _mean_rotation(rel[far])
    spread = _angle(np.swapaxes(rel[far], 1, 2) @ mate)
    out["mate"] = {
        "angle_deg": round(float(_angle(mate)), 2),
        "spread_median_deg": round(float(np.median(spread)), 2),
        "within_10deg": round(float(np.mean(spread < 10.0)), 3),
    }
    volume = assembly_volume(args.structure, args.box, args.pixel)
    centre = (np.array(volume.shape) - 1) / 2
    turned = affine_transform(volume, mate, offset=centre - mate @ centre, order=3)
    turned = apply_alignment(turned, align_maps(turned, volume, args.pixel))
    curve = fsc(turned, volume)
    out["self_fsc"] = {
        "fsc05_A": round(resolution_at(curve, args.box, args.pixel, 0.5), 2),
        "fsc0143_A": round(resolution_at(curve, args.box, args.pixel, 0.143), 2),
        "at_nyquist": round(float(curve[args.box // 2 - 1]), 3),
    }
    to_mate = _angle(np.swapaxes(true_rot @ mate, 1, 2) @ found)
    err = np.minimum(_angle(rel), to_mate)
    out["errors_mod_mate"] = {
        "median_deg": round(float(np.median(err)), 2),
        "p90_deg": round(float(np.percentile(err, 90)), 2),
        "over_20deg": round(float(np.mean(err > 20.0)), 3),
        "near_true_median_deg": round(float(np.median(err[~far])), 2),
        "near_mate_median_deg": round(float(np.median(err[far])), 2),
    }
    print(json.dumps(out), flush=True)
    particles = load_particles(args.workdir / "stack" / "particles.star")
    ws = build_workspace(particles.images, particles.ctf_params, particles.pixel_size_A, "C1")
    true_org = -truth.shifts_A / particles.pixel_size_A
    truth_grid = fourier.pad_fourier(volume)
    half_grids = [fourier.pad_fourier(run["half1"]), fourier.pad_fourier(run["half2"])]
    for res in [float(r) for r in args.resolutions.split(",")]:
        data = ws.search_data(res)
        idx = np.arange(0, ws.n, args.every)
        s_true = _polished_scores(truth_grid, data, idx, true_rot[idx], true_org[idx])
        s_mate = _polished_scores(truth_grid, data, idx, true_rot[idx] @ mate, true_org[idx])
        row = {"resolution_A": res, "truth_prefers_true": round(float(np.mean(s_true > s_mate)), 3)}
        for name, own in (("own_half", True), ("other_half", False)):
            wins = []
            for h in (0, 1):
                sel = idx[halves[idx] == h]
                grid = half_grids[h if own else 1 - h]
                s_found = _polished_scores(grid, data, sel, found[sel], origins[sel])
                s_flip = _polished_scores(grid, data, sel, found[sel] @ mate, origins[sel])
                wins.append(s_found > s_flip)
            row[f"{name}_prefers_found"] = round(float(np.mean(np.concatenate(wins))), 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
