"""How reliable is ``cryofac reconstruct`` on one particle set? Runs it at several seeds.

Takes a particle STAR file (e.g. the demo's gathered particles) and the simulated truth,
runs the whole reconstruction (2D, ab-initio, gold-standard refinement) once per seed and
prints, per seed: the ab-initio map and the final map against the truth (FSC 0.5 after
alignment of orientation, shift and hand — the demo's measure), the half-map resolution
the run reports (FSC 0.143), and the wall time. A row whose truth resolution is far worse
than its half-map resolution is a wrong map both halves agree on.

    python benchmarks/reconstruct_seeds.py DEMO/runs/session-1/reconstruct/p0000531/input_particles.star \
        DEMO/raw/session-1/truth/truth_map.mrc --symmetry O --seeds 0 1 2 3

Appends a table to ``benchmarks/results/reconstruct_seeds.md`` (or ``--out-md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("particles", type=Path, help="particle STAR file")
    parser.add_argument("truth", type=Path, help="simulated truth map (MRC)")
    parser.add_argument("--symmetry", default="C1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, default=Path("reconstruct-seeds"))
    parser.add_argument(
        "--attempts", type=int, default=None, help="ab-initio attempts [AbinitioOptions.attempts]"
    )
    parser.add_argument("--label", default="", help="what this run measures (for the table)")
    parser.add_argument(
        "--out-md",
        type=Path,
        default=Path(__file__).parent / "results" / "reconstruct_seeds.md",
    )
    args = parser.parse_args()

    from cryofac.demo.story import truth_resolution_A
    from pipeline import backend
    from pipeline.reconstruction.options import AbinitioOptions, ReconstructOptions
    from pipeline.reconstruction.run import run_reconstruction

    backend.use("cpu", args.threads)
    abinitio = AbinitioOptions()
    if args.attempts is not None:
        abinitio = AbinitioOptions(attempts={args.symmetry.strip().upper(): args.attempts})
    options = ReconstructOptions(symmetry=args.symmetry, abinitio=abinitio)
    rows = []
    for seed in args.seeds:
        out = args.workdir / f"seed{seed}"
        t = time.perf_counter()
        result = run_reconstruction(args.particles, out, options, seed=seed, progress=print)
        wall = time.perf_counter() - t
        ab = truth_resolution_A(out / "abinitio.mrc", args.truth, args.symmetry)
        final = truth_resolution_A(out / "map.mrc", args.truth, args.symmetry)
        row = (seed, ab, final, result["resolution_A"], wall)
        rows.append(row)
        print(
            f"seed {seed}: ab-initio {ab:.1f} Å, map {final:.1f} Å against the truth; "
            f"half-maps {result['resolution_A']:.1f} Å; {wall:.0f} s"
        )
    lines = [
        f"\n## {args.label or args.particles}\n",
        f"{platform.node()}, {os.cpu_count()} CPUs, {args.threads} threads, "
        f"load average at the end {os.getloadavg()[0]:.1f}; symmetry {args.symmetry}, "
        f"ab-initio attempts {abinitio.attempts_for(args.symmetry)}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        "| seed | ab-initio vs truth (FSC 0.5) | map vs truth (FSC 0.5) | half-maps (FSC 0.143) | wall |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {s} | {a:.1f} Å | {f:.1f} Å | {h:.1f} Å | {w:.0f} s |" for s, a, f, h, w in rows]
    args.out_md.parent.mkdir(parents=True, exist_ok=True)
    with args.out_md.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
