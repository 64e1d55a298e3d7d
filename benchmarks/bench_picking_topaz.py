"""topaz-em's pretrained picker beside cryofac's pickers on the four-shape benchmark (issue 21).

Not part of CI. topaz needs PyTorch, which cryofac does not depend on: install it in a
separate virtual environment with the CPU build of torch (never a CUDA one), e.g.

    python3 -m venv /work/topaz-venv
    /work/topaz-venv/bin/pip install torch==2.13.0          # the CPU wheel where one is local
    /work/topaz-venv/bin/pip install --no-deps topaz-em
    /work/topaz-venv/bin/pip install numpy scipy pandas pillow scikit-learn tqdm

Run: ``nice python benchmarks/bench_picking_topaz.py --topaz-python /work/topaz-venv/bin/python
[--structures all] [--conditions 0,1,2,3,4,5] [--threads 2] [--json FILE]``.

The micrographs are those of :mod:`bench_picking_shapes` (same seeds), written as MRC
files. topaz is run as its authors recommend: ``python -m topaz.commands.preprocess -s 4``
(1.5 → 6 Å/px, GMM normalisation) then ``python -m topaz.commands.extract`` with the shipped
ResNet16 (u64) model, extraction radius half the particle diameter in downsampled pixels,
score threshold 0 and coordinates scaled back ``-x 4``; on the CPU (``-d -1``) with
``--threads`` PyTorch threads. cryofac's blob picker (diameter and min–max range, the
micrograph's CTF) and template picker (the map, 50 views) score on the same micrographs
with the same one-to-one matching (0.3 × diameter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_picking_shapes as shapes  # noqa: E402

TOPAZ_PIXEL_A = 6.0


def run_topaz(python: str, mrc: Path, work: Path, radius_px: int, threads: int) -> np.ndarray:
    """topaz preprocess + extract on one micrograph: (n, 2) picks [x, y] in input pixels."""
    scale = int(round(TOPAZ_PIXEL_A / shapes.PIXEL_A))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    processed = work / "processed"
    processed.mkdir(exist_ok=True)
    common = ["-d", "-1", "-j", str(threads)]
    subprocess.run(
        [python, "-m", "topaz.commands.preprocess", "-s", str(scale), "-o", str(processed)]
        + common
        + [str(mrc)],
        check=True,
        env=env,
        capture_output=True,
    )
    out = work / f"{mrc.stem}_topaz.txt"
    subprocess.run(
        [python, "-m", "topaz.commands.extract", "-r", str(radius_px), "-t", "0"]
        + ["-x", str(scale), "-o", str(out)]
        + common
        + [str(processed / mrc.name)],
        check=True,
        env=env,
        capture_output=True,
    )
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:] if line.strip()]
    return np.array([[float(r[1]), float(r[2])] for r in rows]).reshape(-1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topaz-python", required=True)
    parser.add_argument("--structures", default="all")
    parser.add_argument("--conditions", default="0,1,2,3,4,5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="blob,template")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.io.mrc import write_mrc
    from pipeline.picking.evaluate import match_picks

    backend.use("cpu", args.threads)
    chosen = [s for s in shapes.STRUCTURES if args.structures == "all" or s.name in args.structures]
    conditions = {int(c) for c in args.conditions.split(",")}
    methods = args.methods.split(",") + ["topaz"]
    rows = []
    print(f"# load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for structure in chosen:
            totals = {m: [0, 0, 0, 0.0] for m in methods}
            tol = 0.3 * structure.diameter_A / shapes.PIXEL_A
            radius = max(1, int(round(0.5 * structure.diameter_A / TOPAZ_PIXEL_A)))
            micrographs = shapes.micrographs(structure, 2048)
            for k, (label, image, truth, volume) in enumerate(micrographs):
                if k not in conditions:
                    continue
                mrc = work / f"{structure.name}_{label}.mrc"
                write_mrc(mrc, image, shapes.PIXEL_A)
                for method in methods:
                    start = time.perf_counter()
                    if method == "topaz":
                        coords = run_topaz(args.topaz_python, mrc, work, radius, args.threads)
                    else:
                        picks = shapes.pick(method, structure, image, truth, volume, 50)
                        coords = picks.coords_px
                    seconds = time.perf_counter() - start
                    score = match_picks(coords, truth.coords_px, tol)
                    shapes.record(rows, totals, structure, label, method, score, seconds)
            shapes.summarise(structure, totals)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
