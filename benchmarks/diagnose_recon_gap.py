"""Where a found map loses resolution against the true-pose map (issue 22, recon2): the
losses separated on one simulated structure.

- ``truepose``: our reconstruction (:mod:`backproject`, as refinement's ``_half_maps``)
  at the TRUE poses vs the truth, with the Wiener filter from the halves' FSC and
  without regularisation (SSNR 10⁴: a plain direct Fourier inversion) — if it is well
  below Nyquist, the back-projector, Wiener filter or interpolation loses resolution;
- ``refine``: gold-standard refinement started from the truth low-passed to
  ``RefineOptions.initial_resolution_A`` (isolates alignment accuracy), with the angular
  error of each iteration's poses against the true poses and its CPU time;
- both print the map against the truth at FSC 0.5 and 0.143 (soft sphere, aligned).

The stack is simulated once into ``--workdir`` (``particles.star`` + ``truth.npz``) and
reused.

    nice -n 10 python benchmarks/diagnose_recon_gap.py --structure cap --seed 1 \
        --workdir /tmp/gap_cap_1 truepose
    nice -n 10 python benchmarks/diagnose_recon_gap.py --structure cap --seed 1 \
        --workdir /tmp/gap_cap_1 refine --refine '{"mask": "map", "mask_references": true}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYMMETRY = {"pentamer": "C1", "apoferritin": "O", "rod": "C1", "cap": "C1"}


def stack(args):
    """(star, truth, volume) of the case, simulated into ``args.workdir`` once."""
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.particles import (
        ParticleStackTruth,
        simulate_particle_stack,
        write_particle_stack,
    )

    work = Path(args.workdir)
    volume = assembly_volume(args.structure, args.box, args.pixel)
    star = work / "stack" / "particles.star"
    saved = work / "truth.npz"
    if not saved.exists():
        t = time.perf_counter()
        images, truth = simulate_particle_stack(
            volume, args.particles, args.pixel, snr=args.snr, rng=1000 * args.seed + 7
        )
        star = write_particle_stack(work / "stack", images, truth)
        np.savez(
            saved,
            eulers_deg=truth.eulers_deg,
            shifts_A=truth.shifts_A,
            du=truth.defocus_u_A,
            dv=truth.defocus_v_A,
            angle=truth.defocus_angle_deg,
            pixel_size_A=truth.pixel_size_A,
            snr=truth.snr,
        )
        print(f"simulated {args.particles} particles ({time.perf_counter() - t:.0f} s)")
    d = np.load(saved)
    truth = ParticleStackTruth(
        d["eulers_deg"], d["shifts_A"], d["du"], d["dv"], d["angle"],
        float(d["pixel_size_A"]), float(d["snr"]),
    )  # fmt: skip
    return star, truth, volume


def case_workspace(args):
    """(truth, volume, workspace) of the case: :func:`stack`'s particles loaded into a
    :class:`Workspace` under the structure's point group."""
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import build_workspace

    star, truth, volume = stack(args)
    particles = load_particles(star)
    symmetry = SYMMETRY[args.structure]
    ws = build_workspace(particles.images, particles.ctf_params, particles.pixel_size_A, symmetry)
    return truth, volume, ws


def against_truth(found: np.ndarray, volume: np.ndarray, pix: float, align: bool = True) -> dict:
    """The map against the truth: FSC 0.5 and 0.143 inside a soft sphere, after alignment
    (turn, shift, hand) when ``align``."""
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.truth import _sphere

    if align:
        found = apply_alignment(found, align_maps(found, volume, pix))
    box = found.shape[0]
    curve = fsc(found * _sphere(box), volume)
    return {
        "curve": [round(float(v), 3) for v in curve],
        "fsc05_A": round(resolution_at(curve, box, pix, 0.5), 3),
        "fsc0143_A": round(resolution_at(curve, box, pix, 0.143), 3),
    }


def truepose(args) -> None:
    from pipeline import backend
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import backproject_particles, build_workspace

    star, truth, volume = stack(args)
    particles = load_particles(star)
    pix = particles.pixel_size_A
    ws = build_workspace(particles.images, particles.ctf_params, pix, "C1")
    idx = np.arange(ws.n)
    origins = -truth.shifts_A / pix
    t = time.process_time()
    bps = [backproject_particles(ws, h, truth.rotations, origins) for h in (idx[::2], idx[1::2])]
    nyq = ws.box // 2 - 1
    halves = [backend.to_numpy(b.reconstruct(nyq, ssnr_default=1.0)) for b in bps]
    curve = fsc(halves[0], halves[1])
    bps[0].add(bps[1])
    whole = backend.to_numpy(bps[0].reconstruct(nyq, fsc=curve))
    np.savez(Path(args.workdir) / "truepose.npz", whole=whole, half1=halves[0], half2=halves[1])
    rows = {
        "halves_fsc0143_A": round(resolution_at(curve, ws.box, pix, 0.143), 3),
        "whole_wiener_halfssnr": against_truth(
            backend.to_numpy(bps[0].reconstruct(nyq, fsc=curve)), volume, pix, False
        ),
        "whole_wiener_fullssnr": against_truth(
            backend.to_numpy(bps[0].reconstruct(nyq, fsc=2 * curve / (1 + curve))),
            volume,
            pix,
            False,
        ),  # fmt: skip
        "whole_plain_inversion": against_truth(
            backend.to_numpy(bps[0].reconstruct(nyq, ssnr_default=1e4)), volume, pix, False
        ),
        "halves_average": against_truth(0.5 * (halves[0] + halves[1]), volume, pix, False),
        "cpu_s": round(time.process_time() - t, 1),
    }
    print(json.dumps({"case": vars_case(args), "truepose": rows}), flush=True)


def vars_case(args) -> dict:
    keys = ("structure", "seed", "box", "pixel", "particles", "snr")
    return {k: getattr(args, k) for k in keys}


def refine_from_truth(args) -> None:
    import dataclasses

    from benchmarks.diagnose_pose_error import pose_errors, summary
    from pipeline.reconstruction import refine
    from pipeline.reconstruction.options import RefineOptions
    from pipeline.reconstruction.run import _refine_kwargs
    from pipeline.reconstruction.symmetry import symmetry_matrices

    truth, volume, ws = case_workspace(args)
    pix = ws.pixel_size_A
    sym = symmetry_matrices(ws.symmetry)
    options = dataclasses.replace(RefineOptions(), **json.loads(args.refine))
    keep = np.arange(ws.n)
    halves = refine.split_halves(keep, ws.n, np.random.default_rng([args.seed, 1]))
    groups = [keep[halves == 0], keep[halves == 1]]
    true_rot = truth.rotations
    true_org = -truth.shifts_A / pix
    clock = {"cpu": time.process_time()}

    def callback(it, maps, rotations, origins):
        row = {"iteration": it, "cpu_s": round(time.process_time() - clock["cpu"], 1)}
        clock["cpu"] = time.process_time()
        err = np.concatenate([pose_errors(rotations[i], true_rot[i], sym) for i in groups])
        row["pose"] = summary(err)
        row["shift_err_px_median"] = round(
            float(np.median(np.linalg.norm(origins - true_org, axis=1))), 3
        )
        print(json.dumps(row), flush=True)

    t, c = time.perf_counter(), time.process_time()
    kwargs = {**_refine_kwargs(options), "subset": keep, "halves": halves}
    result = refine.refine(
        ws, volume, np.random.default_rng([args.seed, 4]), progress=print, callback=callback,
        **kwargs,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    tag = args.tag or "refine"
    np.savez(
        Path(args.workdir) / f"{tag}.npz",
        half1=result.half_maps[0], half2=result.half_maps[1],
        rotations=result.rotations, origins_px=result.origins_px, halves=result.halves,
    )  # fmt: skip
    scores = None if args.no_scores else score_true_vs_found(ws, result, groups, true_rot, true_org)
    row = {
        "scores": scores,
        "case": vars_case(args),
        "refine": json.loads(args.refine),
        "half_maps_A": round(result.resolution_A, 3),
        "found": against_truth(result.average_map, volume, pix, align=True),
        "iterations": [h for h in result.history if isinstance(h["iteration"], int)][-1][
            "iteration"
        ]
        + 1,
        "history": result.history,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
    }
    print(json.dumps(row), flush=True)
    if args.jsonl:
        with Path(args.jsonl).open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def score_true_vs_found(ws, result, groups, true_rot, true_org) -> dict:
    """Is the found poses' error the likelihood's (noise) or the search's? Each half's
    particles scored against that half's final map, out to the last search resolution,
    at their found poses, at their true poses, and after the final local moves started
    from the true poses: the fraction whose found pose scores better than the true one
    (≈ 1: the likelihood's optimum is off the truth, noise-limited; ≈ 0: the search
    stops short of it)."""
    from pipeline.reconstruction import fourier, search
    from pipeline.reconstruction.refine import angular_step_deg

    last = [h for h in result.history if isinstance(h["iteration"], int)][-1]
    data = ws.search_data(last["search_resolution_A"])
    radius = ws.radius_px(last["search_resolution_A"])
    step = angular_step_deg(radius, ws.box / 2)
    tiny = 1e-6
    out = {"search_resolution_A": last["search_resolution_A"], "step_deg": round(step, 3)}
    better, polished_better, gain = [], [], []
    for h, idx in enumerate(groups):
        fgrid = fourier.pad_fourier(result.half_maps[h])
        _, _, s_found = search.local_search(
            fgrid, data, idx, result.rotations[idx], result.origins_px[idx], tiny, tiny
        )
        _, _, s_true = search.local_search(
            fgrid, data, idx, true_rot[idx], true_org[idx], tiny, tiny
        )
        rot, org = true_rot[idx], true_org[idx]
        for step_deg, sstep in [(2 * step, 1.0), (step, 0.5), (step, 0.5), (step / 2, 0.25)]:
            rot, org, s_pol = search.local_search(fgrid, data, idx, rot, org, step_deg, sstep)
        better.append(s_found > s_true)
        polished_better.append(s_found >= s_pol)
        gain.append(s_pol - s_true)
    out["found_beats_true"] = round(float(np.mean(np.concatenate(better))), 3)
    out["found_beats_polished_true"] = round(float(np.mean(np.concatenate(polished_better))), 3)
    out["polish_gain_median"] = float(np.median(np.concatenate(gain)))
    return out


def add_case_arguments(parser, structure: str = "cap") -> None:
    """The simulated case's arguments, as :func:`stack` reads them (the outside-like
    defaults: box 128, 1.5 Å/px, 1,500 particles, SNR 0.05, seed 1)."""
    parser.add_argument("--structure", default=structure, choices=list(SYMMETRY))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--pixel", type=float, default=1.5)
    parser.add_argument("--particles", type=int, default=1500)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--workdir", type=Path, required=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["truepose", "refine"])
    add_case_arguments(parser, structure="cap")
    parser.add_argument("--refine", default="{}", help="RefineOptions overrides (JSON)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--tag", default=None, help="name of the saved maps and poses (npz)")
    parser.add_argument(
        "--no-scores", action="store_true", help="skip the found-vs-true pose scores (CPU)"
    )
    args = parser.parse_args()
    from pipeline import backend

    backend.use("cpu", args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.what == "truepose":
        truepose(args)
    else:
        refine_from_truth(args)


if __name__ == "__main__":
    main()
