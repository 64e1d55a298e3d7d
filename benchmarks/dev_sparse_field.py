"""Sparse development field for the any-shape threshold (pick5, issue 21): few apoferritins
on much bare ice, where noise peaks outnumber the particles.

``n`` apoferritins (default 20) on 2048² micrographs at 1.5 Å/px (the project's simulator,
realistic excluded volume, 450 Å or 250 Å ice, no contaminants), defocus 1.2–2.6 µm, picked
with ``pick_blobs(shape="any", diameter 130 Å)`` without a CTF (contrast inverted, as the
unit test's sparse field), scored one-to-one within 0.2 × D. Development only.

Run: ``nice python benchmarks/dev_sparse_field.py [--seed N] [--n 20] [--options JSON]``
(JSON: ``pick_blobs`` keyword arguments; ``{"decoy": {...}}`` becomes a ``DecoyThreshold``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFOCI_A = (12000.0, 19000.0, 26000.0)
ICE_A = (450.0, 250.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.ctf_model import CTFParams
    from pipeline.picking.blob import DecoyThreshold, pick_blobs
    from pipeline.picking.evaluate import match_picks
    from pipeline.simulate.assemblies import assembly_mass_kDa, assembly_volume
    from pipeline.simulate.micrograph import protein_volume_A3, simulate_micrograph

    backend.use("cpu", 2)
    options = json.loads(args.options)
    if isinstance(options.get("decoy"), dict):
        options["decoy"] = DecoyThreshold(**options["decoy"])
    volume = assembly_volume("apoferritin", 100, 1.5)
    excluded = protein_volume_A3(assembly_mass_kDa("apoferritin") / 0.93)
    print(f"# load {os.getloadavg()}, seed {args.seed}, n {args.n}, options {args.options}")
    totals = [0, 0, 0]
    for i, (defocus, ice) in enumerate((d, t) for d in DEFOCI_A for t in ICE_A):
        image, truth = simulate_micrograph(
            volume,
            (2048, 2048),
            1.5,
            n_particles=args.n,
            ctf=CTFParams(defocus + 200.0, defocus - 200.0, 30.0),
            n_contaminants=0,
            ice_thickness_A=ice,
            rng=1000 * args.seed + i,
            excluded_volume_A3=excluded,
        )
        start = time.process_time()
        picks = pick_blobs(image, 1.5, 130.0, shape="any", **options)
        cpu = time.process_time() - start
        score = match_picks(picks.coords_px, truth.coords_px, 0.2 * 130.0 / 1.5)
        totals[0] += score.n_matched
        totals[1] += score.n_picks
        totals[2] += score.n_true
        print(
            f"df{defocus / 1e4:.1f} ice{ice:.0f}: P {score.precision:.3f} R {score.recall:.3f} "
            f"({score.n_matched}/{score.n_true}, {score.n_picks} picks) {cpu:.2f} s CPU",
            flush=True,
        )
    m, n_p, n_t = totals
    p, r = m / max(n_p, 1), m / max(n_t, 1)
    f1 = 2 * p * r / max(p + r, 1e-9)
    print(f"== sparse field n={args.n} seed {args.seed}: P {p:.3f} R {r:.3f} F1 {f1:.3f}")


if __name__ == "__main__":
    main()
