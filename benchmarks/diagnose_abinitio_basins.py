"""Issue 22: do independent ab-initio runs land in different basins, and do held-out
particles tell the right one? (fifth session, 2026-12-07)

One stack as ``diagnose_recon_gap.py`` simulates it (``--workdir`` reused). Every
sixth particle is held out; ``--runs`` single-start ab-initio runs (seeds 10, 11, …) of
the other particles, each scored, like :func:`pipeline.reconstruction.abinitio.abinitio`
judges its starts, by the mean best whitened correlation of the held-out particles with
its projections at ``--judge-resolution`` (global search), and compared with the truth
(FSC 0.5 after alignment). The truth's own score is printed first. The maps are saved
(``basin_<seed>.npz``) for ``refine_from_start.py``.

    nice -n 10 python benchmarks/diagnose_abinitio_basins.py --structure pentamer --seed 1 \\
        --workdir /tmp/gap_pentamer_1 --runs 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from benchmarks.diagnose_recon_gap import SYMMETRY, add_case_arguments, case_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(parser, structure="pentamer")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--first-run", type=int, default=10, help="the first run's seed")
    parser.add_argument("--judge-resolution", type=float, default=15.0)
    parser.add_argument("--abinitio", default="{}", help="abinitio() keyword overrides (JSON)")
    parser.add_argument(
        "--starts",
        type=int,
        default=0,
        help="instead of single-start runs: --runs ab-initio runs of this many starts, each "
        "run to the end (explore every iteration); every start's map is scored by the "
        "script and against the truth beside ab-initio's own judge score",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from pipeline import backend
    from pipeline.reconstruction import abinitio, fourier, search
    from pipeline.reconstruction.align import aligned_resolution_A
    from pipeline.reconstruction.grids import change_box, lowpass
    from pipeline.reconstruction.symmetry import asymmetric_grid

    backend.use("cpu", 2)
    _, volume, ws = case_workspace(args)
    symmetry = SYMMETRY[args.structure]
    res = args.judge_resolution
    small = ws.for_resolution(res)
    data = small.search_data(res)
    step = min(20.0, max(7.5, math.degrees(1.3 / small.radius_px(res))))
    grid = asymmetric_grid(search.so3_grid(step), symmetry)
    shifts = search.shift_grid(0.06 * small.box, max(1.0, min(res / (3 * small.pixel_size_A), 4)))
    held_out = np.arange(0, ws.n, 6)
    used = np.setdiff1d(np.arange(ws.n), held_out)

    def score(volume_full: np.ndarray) -> float:
        m = lowpass(np.asarray(change_box(volume_full, small.box)), res, small.pixel_size_A)
        refs = fourier.project(fourier.pad_fourier(np.asarray(m)), grid, small.plane, data.count)
        return float(np.mean(search.global_search(refs, data, held_out, shifts)[2]))

    case = {k: getattr(args, k) for k in ("structure", "seed", "box", "pixel", "particles")}
    print(json.dumps({"case": case, "truth_score": round(score(volume), 3)}), flush=True)
    small_ab = ws.for_resolution(15.0)
    if args.starts > 1:
        for run in range(args.first_run, args.first_run + args.runs):
            judged_runs(args, run, small_ab, used, score, volume, ws.pixel_size_A)
        return
    for run in range(args.first_run, args.first_run + args.runs):
        c0 = time.process_time()
        kwargs = {"n_starts": 1, **json.loads(args.abinitio)}
        found = abinitio.abinitio(small_ab, np.random.default_rng([run, 99]), subset=used, **kwargs)
        found = np.asarray(change_box(found, ws.box))
        np.savez(args.workdir / f"basin_{run}.npz", map=found)
        row = {
            "run": run,
            "held_out_score": round(score(found), 3),
            "vs_truth_fsc05_A": round(aligned_resolution_A(found, volume, ws.pixel_size_A), 2),
            "cpu_s": round(time.process_time() - c0, 1),
        }
        print(json.dumps(row), flush=True)


def judged_runs(args, run, small_ab, used, score, truth, pixel_size_A) -> None:
    """One ``--starts``-start ab-initio run (every start to the end unless ``--abinitio``
    sets ``explore_iterations``); a row per start and judging round (``rounds``, with
    ``keep_fraction`` 1 every start is judged at every round): ab-initio's own held-out
    score, the script's, and FSC 0.5 against the truth."""
    from pipeline.reconstruction import abinitio
    from pipeline.reconstruction.align import aligned_resolution_A
    from pipeline.reconstruction.grids import change_box

    overrides = json.loads(args.abinitio)
    kwargs = {
        "n_starts": args.starts,
        "explore_iterations": overrides.get("n_iterations", 30),
        **overrides,
    }
    rounds: list = []

    def keep(maps, scores, best, info):
        rounds.append((maps, scores, best, info))

    c0 = time.process_time()
    rng = np.random.default_rng([run, 98])
    abinitio.abinitio(small_ab, rng, subset=used, on_judged=keep, **kwargs)
    cpu = round(time.process_time() - c0, 1)
    for maps, scores, best, info in rounds:
        for k, (m, own) in enumerate(zip(maps, scores, strict=True)):
            found = np.asarray(change_box(m, truth.shape[0]))
            label = info["starts"][k]
            if info is rounds[-1][3]:
                np.savez(args.workdir / f"start_{run}_{label}.npz", map=found)
            row = {
                "run": run,
                "iteration": info["iteration"],
                "start": label,
                "best": k == best,
                "own_score": round(own, 3),
                "held_out_score": round(score(found), 3),
                "vs_truth_fsc05_A": round(aligned_resolution_A(found, truth, pixel_size_A), 2),
                "run_cpu_s": cpu,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
