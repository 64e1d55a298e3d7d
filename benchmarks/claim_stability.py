"""How much a run's claimed resolution (mask-corrected FSC 0.143, Chen et al. 2013) depends
on the phase randomisation's random seed and on the solvent mask's soft edge (issue 22).

Recomputes ``cryofac reconstruct``'s claim from a finished run folder's half-maps, with the
mask :func:`postprocess.soft_mask` makes with ``PostprocessOptions(mask_edge_px=E)`` for
each ``--edge-px`` E (0: the 6 Å edge and 3 Å dilation of the code before), for each
``--seeds``.

    python benchmarks/claim_stability.py RUN_DIR [RUN_DIR ...] --edge-px 0 3 --seeds 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--edge-px", type=float, nargs="+", default=[0.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction import postprocess
    from pipeline.reconstruction.fsc import mask_corrected_fsc, resolution_at
    from pipeline.reconstruction.options import PostprocessOptions

    backend.use("cpu", 1)
    print("| run | soft edge | seed | claimed (corrected 0.143) | masked | unmasked |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in args.runs:
        h1, pix = read_mrc(run / "half1.mrc")
        h2, _ = read_mrc(run / "half2.mrc")
        box = h1.shape[0]
        for edge in args.edge_px:
            options = PostprocessOptions(mask_edge_px=edge, mask_extend_px=edge / 2)
            mask = postprocess.soft_mask(0.5 * (h1 + h2), pix, **options.mask_kwargs(pix))
            for seed in args.seeds:
                rng = np.random.default_rng([seed, 5])
                corrected, masked, unmasked, _ = mask_corrected_fsc(h1, h2, mask, rng)
                res = [resolution_at(c, box, pix) for c in (corrected, masked, unmasked)]
                label = f"{edge:g} px" if edge else "default (6 Å)"
                print(
                    f"| {run} | {label} | {seed} | " + " | ".join(f"{r:.2f} Å" for r in res) + " |"
                )


if __name__ == "__main__":
    main()
