"""Issue 22: gold-standard refinement from a given start — the truth, one ab-initio map of
all particles, or a saved map (``--file``, an ``.npz`` with ``map``, e.g. from
``diagnose_abinitio_basins.py``) — with each iteration's pose errors against the true
poses (:func:`benchmarks.diagnose_pose_error.pose_errors`: up to one frame rotation and
the hand) and the final map against the truth (FSC 0.5 / 0.143, aligned). Stack as
``diagnose_recon_gap.py`` simulates it (``--workdir`` reused); final poses and
half-maps saved as ``poses_<tag>.npz``.

    nice -n 10 python benchmarks/refine_from_start.py abinitio --structure pentamer \
        --seed 1 --workdir /tmp/gap_pentamer_1 --tag ab [--refine '{"recheck_every": 1}']
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from benchmarks.diagnose_pose_error import pose_errors, summary
    from benchmarks.diagnose_recon_gap import (
        SYMMETRY,
        add_case_arguments,
        against_truth,
        case_workspace,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("start", choices=["truth", "abinitio", "file"])
    add_case_arguments(p, structure="pentamer")
    p.add_argument("--refine", default="{}")
    p.add_argument("--abinitio", default="{}")
    p.add_argument("--file", default=None)
    p.add_argument("--tag", default="x")
    args = p.parse_args()
    from pipeline import backend

    backend.use("cpu", 2)

    from pipeline.reconstruction import refine
    from pipeline.reconstruction.options import AbinitioOptions, ReconstructOptions, RefineOptions
    from pipeline.reconstruction.run import _one_abinitio, _refine_kwargs
    from pipeline.reconstruction.symmetry import symmetry_matrices

    truth, volume, ws = case_workspace(args)
    pix = ws.pixel_size_A
    symmetry = SYMMETRY[args.structure]
    sym = symmetry_matrices(symmetry)
    if args.start == "truth":
        start = volume
    elif args.start == "file":
        start = np.load(args.file)["map"]
    else:
        ab = dataclasses.replace(AbinitioOptions(), **json.loads(args.abinitio))
        opts = ReconstructOptions(symmetry=symmetry, seed=args.seed, abinitio=ab)
        small = dataclasses.replace(
            ws.for_resolution(ab.end_resolution_A), symmetry=ab.symmetry_for(symmetry)
        )
        c0 = time.process_time()
        start, info = _one_abinitio(
            ws,
            small,
            np.arange(ws.n),
            np.random.default_rng([args.seed, 3]),
            opts,
            lambda *a, **k: None,
        )
        np.savez(args.workdir / f"abinitio_{args.tag}.npz", map=start)
        print(
            json.dumps(
                {
                    "abinitio_cpu_s": round(time.process_time() - c0, 1),
                    "abinitio_vs_truth": {
                        k: v for k, v in against_truth(start, volume, pix).items() if k != "curve"
                    },
                }
            ),
            flush=True,
        )
    options = dataclasses.replace(RefineOptions(), **json.loads(args.refine))
    keep = np.arange(ws.n)
    halves = refine.split_halves(keep, ws.n, np.random.default_rng([args.seed, 1]))
    true_rot = truth.rotations
    clock = {"cpu": time.process_time()}

    def callback(it, maps, rotations, origins):
        err = pose_errors(rotations, true_rot, sym)
        row = {
            "it": it,
            "cpu_s": round(time.process_time() - clock["cpu"], 1),
            "pose": summary(err),
        }
        clock["cpu"] = time.process_time()
        print(json.dumps(row), flush=True)

    res = refine.refine(
        ws,
        start,
        np.random.default_rng([args.seed, 4]),
        progress=None,
        callback=callback,
        **{**_refine_kwargs(options), "subset": keep, "halves": halves},
    )
    np.savez(
        args.workdir / f"poses_{args.tag}.npz",
        rot=res.rotations,
        org=res.origins_px,
        true_rot=true_rot,
        half1=res.half_maps[0],
        half2=res.half_maps[1],
    )
    at = against_truth(res.average_map, volume, pix)
    print(
        json.dumps(
            {
                "tag": args.tag,
                "start": args.start,
                "refine": json.loads(args.refine),
                "half_maps_A": round(res.resolution_A, 2),
                "found": {k: v for k, v in at.items() if k != "curve"},
                "history": [
                    {
                        k: h.get(k)
                        for k in ("iteration", "resolution_A", "search_resolution_A", "box")
                    }
                    for h in res.history
                ],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
