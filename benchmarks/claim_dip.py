"""Mask-corrected claims (Chen et al. 2013) on half-maps whose unmasked FSC dips at low
resolution and recovers (:func:`pipeline.simulate.halfmaps.dipping_halves`): phases
randomised from the first shell below 0.8 (RELION's rule, this project's before
2026-12-07) against from the shell after the final fall (:func:`fsc.randomisation_shell`),
each against the resolution the masked signal-to-noise supports.

    python benchmarks/claim_dip.py --seeds 0 1 2 3 4 5 6 7 --low-error 0.3 0.6 1.0
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--low-error", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    parser.add_argument("--offset", type=float, default=3.0)
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.reconstruction.fsc import (
        fsc,
        mask_corrected_fsc,
        randomisation_shell,
        resolution_at,
    )
    from pipeline.simulate.halfmaps import dipping_halves

    backend.use("cpu", 1)
    print(
        "| low-resolution error | seed | reference | unmasked | first-shell rule (shell) "
        "| final-fall rule (shell) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    errors = {"first": [], "final": []}
    for low in args.low_error:
        for seed in args.seeds:
            maps = dipping_halves(seed, low_error=low, offset=args.offset)
            box, pix = maps.half1.shape[0], 1.5
            row = []
            unmasked = fsc(maps.half1, maps.half2)
            for rule in ("first", "final"):
                if rule == "first":
                    below = np.flatnonzero(unmasked[1:] < 0.8)
                    shell = int(below[0] + 1) if below.size else len(unmasked) - 1
                else:
                    shell = randomisation_shell(unmasked)
                corrected, *_ = mask_corrected_fsc(
                    maps.half1, maps.half2, maps.mask, np.random.default_rng([seed, 5]), shell=shell
                )
                claim = resolution_at(corrected, box, pix)
                errors[rule].append(abs(claim - maps.reference_A) / maps.reference_A)
                row.append(f"{claim:.2f} Å ({shell})")
            print(
                f"| {low:g} | {seed} | {maps.reference_A:.2f} Å | "
                f"{resolution_at(unmasked, box, pix):.2f} Å | {row[0]} | {row[1]} |"
            )
    for rule, e in errors.items():
        e = np.array(e)
        print(
            f"\n{rule} rule: median error {100 * np.median(e):.1f} %, worst {100 * e.max():.1f} %, "
            f"within 20 %: {int((e <= 0.2).sum())}/{len(e)}"
        )


if __name__ == "__main__":
    main()
