"""Issue 22: does :func:`support.particle_support` tell right half-maps from wrong ones
that agree? On one simulated structure of ``bench_reconstruct_structures.py`` (same
particles for the same seed), prints the resolution the particles support against the
half-maps' own FSC 0.143, for

- the half-maps of the particles at their TRUE poses (right maps: supported ≈ own);
- with ``--run DIR``: a finished run's half-maps and poses (``refine.npz``), on the same
  particles (a bench run of the same structure and seed).

    python benchmarks/diagnose_support.py --structure pentamer --seed 2 --run RUN_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", default="pentamer")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--box", type=int, default=32)
    parser.add_argument("--pixel", type=float, default=8.0)
    parser.add_argument("--particles", type=int, default=600)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--gain", type=float, default=1.0)
    parser.add_argument("--run", type=Path, nargs="*", default=[])
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction.support import particle_support
    from pipeline.reconstruction.symmetry import symmetry_matrices
    from pipeline.reconstruction.workspace import backproject_particles, build_workspace
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.particles import simulate_particle_stack

    backend.use("cpu", 1)
    symmetry = {"apoferritin": "O"}.get(args.structure, "C1")
    n_sym = len(symmetry_matrices(symmetry))
    volume = assembly_volume(args.structure, args.box, args.pixel)
    images, truth = simulate_particle_stack(
        volume, args.particles, args.pixel, snr=args.snr, rng=1000 * args.seed + 7
    )
    ws = build_workspace(images, truth.ctf, args.pixel, symmetry)
    idx = np.arange(ws.n)
    halves = idx % 2
    origins = -truth.shifts_A / args.pixel
    maps = tuple(
        backend.to_numpy(
            backproject_particles(ws, idx[halves == h], truth.rotations, origins).reconstruct(
                ws.box // 2 - 1, ssnr_default=1.0
            )
        )
        for h in (0, 1)
    )

    def show(label, sup):
        print(
            f"{label}: halves' FSC 0.143 {sup.halves_A:.1f} Å, supported {sup.supported_A:.1f} Å "
            f"(ratio {sup.supported_A / sup.halves_A:.2f}); rho[1:8] "
            + " ".join(f"{r:.3f}" for r in sup.rho[1:8])
            + "; fsc "
            + " ".join(f"{r:.2f}" for r in sup.fsc_halves[1:8])
            + "; supported "
            + " ".join(f"{r:.2f}" for r in sup.fsc_supported[1:8]),
            flush=True,
        )

    show(
        "true poses",
        particle_support(ws, maps, truth.rotations, origins, halves, idx, n_sym, args.gain),
    )
    for run in args.run:
        saved = np.load(run / "refine.npz")
        maps = (read_mrc(run / "half1.mrc")[0], read_mrc(run / "half2.mrc")[0])
        sup = particle_support(
            ws, maps, saved["rotations"], saved["origins_px"], saved["halves"], saved["subset"],
            n_sym, args.gain,
        )  # fmt: skip
        show(str(run), sup)


if __name__ == "__main__":
    main()
