"""The held-out mixture (:mod:`bench_picking_mixture`) picked twice: blob picks, then
template picks with the 2D class averages of those blob picks (the cryoSPARC Live loop,
:func:`bench_picking_shapes.class_templates` with the off-centre rule of ``classes_c``).

Both pickers get a diameter of 150 Å and the micrograph's CTF (the simulation's, standing
in for a CTF estimate); nothing was tuned on this set. Scoring as in the mixture benchmark.

Run: ``nice python benchmarks/bench_picking_mixture_classes.py [--physics hard|realistic]
[--seed N] [--classes 12]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_picking_mixture as mix  # noqa: E402
import bench_picking_shapes as shapes  # noqa: E402


class _Truth:
    def __init__(self, ctf):
        self.ctf = ctf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--physics", choices=("hard", "realistic"), default="hard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.picking.evaluate import match_picks

    backend.use("cpu", args.threads)
    assert shapes.PIXEL_A == mix.PIXEL_A
    # a 150 Å particle, min–max 60–200 Å as a user would type for this mixture
    structure = shapes.Structure("mixture", 0, 150.0, 60.0, 200.0, 0, True)
    items, truths = [], []
    for i in range(len(mix.DEFOCI_A)):
        image, truth, conts, n_a, ctf = mix.mixture(i, args.physics, args.seed)
        items.append((f"mix_{i}", image, _Truth(ctf), None))
        truths.append((truth, n_a))
    start = time.perf_counter()
    averages, px, message = shapes.class_templates(
        structure, items, args.classes, 17 + args.seed, max_offset=0.25
    )
    print(f"{message}, {time.perf_counter() - start:.1f} s", flush=True)
    tol = 0.3 * 150.0 / mix.PIXEL_A
    for method in ("blob", "classes_c"):
        total = np.zeros(3)
        for (label, image, t, _), (truth, n_a) in zip(items, truths, strict=True):
            picks = shapes.pick(method, structure, image, t, None, 0, (averages, px))
            s = match_picks(picks.coords_px, truth, tol)
            s_a = match_picks(picks.coords_px, truth[:n_a], tol)
            s_b = match_picks(picks.coords_px, truth[n_a:], tol)
            total += (s.n_picks, s.n_true, s.n_matched)
            print(
                f"{label} {method}: P {s.precision:.3f} R {s.recall:.3f} F1 {s.f1:.3f} "
                f"(recall elongated {s_a.recall:.2f}, cap {s_b.recall:.2f})",
                flush=True,
            )
        p, r = total[2] / max(total[0], 1), total[2] / total[1]
        print(
            f"== mixture ({args.physics}, seed {args.seed}) {method}: P {p:.3f} R {r:.3f} "
            f"F1 {2 * p * r / max(p + r, 1e-12):.3f} (load {os.getloadavg()[0]:.1f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
