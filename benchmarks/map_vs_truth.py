"""A finished ``cryofac reconstruct`` run's map against the simulated truth.

The averaged half-maps are aligned onto the truth (turn, shift, hand) and compared inside
a soft sphere; printed: where the FSC first falls below 0.5 and 0.143 and where it falls
below them for good (:func:`pipeline.reconstruction.fsc.final_resolution_at`), the
run's claim, and the alignment's correlation. One JSON line per run.

    python benchmarks/map_vs_truth.py RUN_DIR [RUN_DIR ...] --structure cap --box 128 --pixel 1.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def compare(run: Path, structure: str, box: int, pixel_A: float) -> dict:
    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import final_resolution_at, fsc, resolution_at
    from pipeline.reconstruction.truth import _sphere
    from pipeline.simulate.assemblies import assembly_volume

    truth = assembly_volume(structure, box, pixel_A)
    found = 0.5 * (read_mrc(run / "half1.mrc")[0] + read_mrc(run / "half2.mrc")[0])
    alignment = align_maps(found, truth, pixel_A)
    curve = fsc(apply_alignment(found, alignment) * _sphere(box), truth)
    result = json.loads((run / "result.json").read_text())
    row = {"run": str(run), "structure": structure, "claimed_A": result.get("resolution_A")}
    for threshold in (0.5, 0.143):
        row[f"first_{threshold}_A"] = round(resolution_at(curve, box, pixel_A, threshold), 2)
        row[f"final_{threshold}_A"] = round(final_resolution_at(curve, box, pixel_A, threshold), 2)
    row["correlation"] = round(float(alignment.correlation), 3)
    row["hand_flipped"] = bool(alignment.flipped)
    row["warnings"] = result.get("warnings", [])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--structure", required=True)
    parser.add_argument("--box", type=int, required=True)
    parser.add_argument("--pixel", type=float, required=True)
    args = parser.parse_args()
    for run in args.runs:
        print(json.dumps(compare(run, args.structure, args.box, args.pixel)), flush=True)


if __name__ == "__main__":
    main()
