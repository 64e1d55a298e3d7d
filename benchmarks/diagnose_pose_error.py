"""Where the found map loses resolution (issue 22): the angular error of the found poses
against the TRUE poses, per stage, on one simulated structure of
``bench_reconstruct_structures.py``.

Runs the stages of ``cryofac reconstruct`` by hand on the simulated particles (no 2D
classification: every particle kept) and prints, per stage:

- each half's ab-initio map against the truth (FSC 0.5 after alignment, Å) and the two
  maps' agreement;
- per refinement iteration: the search and half-map resolutions, and the angular error
  of each half's poses against the true poses (median and 90th percentile, degrees,
  after removing the one rotation between the found and the true frame, symmetry-aware)
  with the fraction of particles more than 3× the median away (lost particles);
- the final map against the truth and the true-pose map's resolution.

``--start truth`` refines from the truth instead of from ab-initio (is refinement, or
ab-initio, the limit?).

    nice -n 10 python benchmarks/diagnose_pose_error.py --structure pentamer --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def rotation_angle_deg(m: np.ndarray) -> np.ndarray:
    """Angle (degrees) of rotation matrices (…, 3, 3)."""
    tr = np.trace(m, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def _mean_rotation(mats: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(mats.mean(axis=0))
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def pose_errors(found: np.ndarray, true: np.ndarray, sym: np.ndarray) -> np.ndarray:
    """Per-particle angular error (degrees) of ``found`` against ``true`` rotations, after
    the single frame rotation G (found = true · G, up to the point group ``sym``) that
    fits most particles; the best of the two composition orders and of the two hands is
    used."""
    best = None
    mirror = np.diag([1.0, 1.0, -1.0])  # a map of the other hand is posed at M·R·M
    hands = (true, mirror @ true @ mirror)
    for order, posed in [(o, t) for o in ("right", "left") for t in hands]:
        # each particle's own frame: G_i = Rt^T Rf (right) or Rf Rt^T (left)
        rt = np.swapaxes(posed, 1, 2)
        q = rt @ found if order == "right" else found @ rt
        # vote: the candidate G closest to most others (sample 200)
        cand = q[np.linspace(0, len(q) - 1, min(200, len(q))).astype(int)]
        scores = []
        for g in cand:
            d = _errors(q, g, sym, order)
            scores.append(np.mean(d < 10.0))
        g = cand[int(np.argmax(scores))]
        for _ in range(3):  # refine on the inliers
            d = _errors(q, g, sym, order)
            inl = q[d < max(5.0, np.percentile(d, 50))]
            aligned = np.array([_closest_copy(qi, g, sym, order) for qi in inl])
            g = _mean_rotation(aligned)
        d = _errors(q, g, sym, order)
        if best is None or np.median(d) < np.median(best):
            best = d
    return best


def _copies(qi: np.ndarray, sym: np.ndarray, order: str) -> np.ndarray:
    # the same pose up to the point group: R_t·S for every S
    return (sym @ qi) if order == "right" else (qi @ np.swapaxes(sym, 1, 2))


def _closest_copy(qi, g, sym, order):
    c = _copies(qi, sym, order)
    return c[int(np.argmin(rotation_angle_deg(np.swapaxes(c, 1, 2) @ g)))]


def _errors(q: np.ndarray, g: np.ndarray, sym: np.ndarray, order: str) -> np.ndarray:
    out = np.full(len(q), 180.0)
    for s in sym:
        c = (s.T @ q) if order == "right" else (q @ s)
        out = np.minimum(out, rotation_angle_deg(np.swapaxes(c, 1, 2) @ g))
    return out


def summary(err: np.ndarray) -> dict:
    med = float(np.median(err))
    return {
        "median_deg": round(med, 2),
        "p90_deg": round(float(np.percentile(err, 90)), 2),
        "over_20deg": round(float(np.mean(err > 20.0)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # the case, as bench_reconstruct_structures.py simulates it
    case = {"structure": "pentamer", "seed": 1, "box": 32, "pixel": 8.0, "particles": 600}
    case.update({"snr": 0.05, "abinitio-iterations": 15, "abinitio-starts": 2})
    for name, default in case.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    parser.add_argument("--start", choices=["abinitio", "truth"], default="abinitio")
    parser.add_argument("--refine", default="{}", help="RefineOptions overrides (JSON)")
    parser.add_argument("--abinitio", default="{}", help="AbinitioOptions overrides (JSON)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="npz: ab-initio maps saved there, reused if present",
    )
    args = parser.parse_args()

    import dataclasses
    import tempfile

    from pipeline import backend
    from pipeline.reconstruction import refine
    from pipeline.reconstruction.align import aligned_resolution_A
    from pipeline.reconstruction.options import (
        AbinitioOptions,
        ReconstructOptions,
        RefineOptions,
    )
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.run import _independent_pair, _refine_kwargs
    from pipeline.reconstruction.symmetry import symmetry_matrices
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack

    sys_sym = {"pentamer": "C1", "apoferritin": "O", "rod": "C1", "cap": "C1"}
    symmetry = sys_sym.get(args.structure, "C1")
    backend.use("cpu", args.threads)
    volume = assembly_volume(args.structure, args.box, args.pixel)
    images, truth = simulate_particle_stack(
        volume, args.particles, args.pixel, snr=args.snr, rng=1000 * args.seed + 7
    )
    work = Path(tempfile.mkdtemp(prefix="diag_"))
    star = write_particle_stack(work / "stack", images, truth)
    particles = load_particles(star)
    pix = particles.pixel_size_A
    ws = build_workspace(particles.images, particles.ctf_params, pix, symmetry)
    sym = symmetry_matrices(symmetry)
    true_rot = truth.rotations
    opts = ReconstructOptions(
        symmetry=symmetry,
        seed=args.seed,
        abinitio=dataclasses.replace(
            AbinitioOptions(iterations=args.abinitio_iterations, n_starts=args.abinitio_starts),
            **json.loads(args.abinitio),
        ),
        refine=dataclasses.replace(RefineOptions(), **json.loads(args.refine)),
    )
    keep = np.arange(ws.n)
    halves = refine.split_halves(keep, ws.n, np.random.default_rng([args.seed, 1]))
    t0 = time.perf_counter()
    if args.start == "truth":
        start = volume
        print("start: the truth")
    elif args.cache is not None and args.cache.exists():
        saved = np.load(args.cache)
        start = (saved["half1"], saved["half2"])
        print(f"start: the ab-initio maps of {args.cache}")
    else:
        ab = opts.abinitio
        small = dataclasses.replace(
            ws.for_resolution(ab.end_resolution_A), symmetry=ab.symmetry_for(symmetry)
        )
        rng = np.random.default_rng([args.seed, 3])
        start, info = _independent_pair(ws, small, keep, halves, rng, opts, lambda *a, **k: None)
        for h in (0, 1):
            print(
                f"ab-initio half {h + 1}: {aligned_resolution_A(start[h], volume, pix):.1f} Å "
                f"vs truth (FSC 0.5)"
            )
        print(f"ab-initio halves agree to {info['halves_agreement_A']:.1f} Å")
        if args.cache is not None:
            np.savez(args.cache, half1=start[0], half2=start[1])
    print(f"ab-initio {time.perf_counter() - t0:.0f} s")

    groups = [keep[halves == 0], keep[halves == 1]]

    def callback(it, maps, rotations, origins):
        row = {"iteration": it}
        for h, idx in enumerate(groups):
            row[f"half{h + 1}"] = summary(pose_errors(rotations[idx], true_rot[idx], sym))
        print(json.dumps(row), flush=True)

    t1 = time.perf_counter()
    kwargs = {**_refine_kwargs(opts.refine), "subset": keep, "halves": halves}
    rng = np.random.default_rng([args.seed, 4])
    result = refine.refine(ws, start, rng, progress=print, callback=callback, **kwargs)
    print(f"refinement {time.perf_counter() - t1:.0f} s")
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.truth import _sphere, true_pose_resolution

    found = aligned_resolution_A(result.average_map, volume, pix)
    res_true = true_pose_resolution(star, truth, volume, symmetry)
    print(
        f"half-maps {result.resolution_A:.2f} Å; found {found:.2f} Å vs truth; "
        f"true poses {res_true:.2f} Å; ratio {found / res_true:.2f}"
    )
    del fsc, resolution_at, _sphere


if __name__ == "__main__":
    main()
