"""Issue 22: how far ONE ab-initio map of all particles lands from the truth, per
configuration (``AbinitioOptions`` overrides), structure and seed — the start refinement
gets with ``AbinitioOptions.independent_halves=False``.

The particles are simulated as ``bench_reconstruct_structures.py`` simulates them (box 32,
8 Å/px, 600 particles, SNR 0.05 by default); every particle is used (no 2D classification).
Per run: the ab-initio map against the truth (FSC 0.5 after aligning turn, shift and hand,
Å) and CPU seconds. Held-out structures (rod, cap) must not be used to choose anything.

    nice -n 10 python benchmarks/bench_abinitio_truth.py --structures pentamer apoferritin \
        --seeds 1 2 3 --config '{"iterations": 15, "n_starts": 2}' '{"iterations": 30}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

SYMMETRY = {"pentamer": "C1", "apoferritin": "O", "rod": "C1", "cap": "C1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", nargs="+", default=["pentamer", "apoferritin"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--config", nargs="+", default=["{}"], help="AbinitioOptions (JSON)")
    parser.add_argument("--box", type=int, default=32)
    parser.add_argument("--pixel", type=float, default=8.0)
    parser.add_argument("--particles", type=int, default=600)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    from pipeline import backend
    from pipeline.reconstruction.align import aligned_resolution_A
    from pipeline.reconstruction.options import AbinitioOptions, ReconstructOptions
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.run import _one_abinitio
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack

    backend.use("cpu", args.threads)
    for structure in args.structures:
        symmetry = SYMMETRY[structure]
        volume = assembly_volume(structure, args.box, args.pixel)
        for seed in args.seeds:
            images, truth = simulate_particle_stack(
                volume, args.particles, args.pixel, snr=args.snr, rng=1000 * seed + 7
            )
            work = Path(tempfile.mkdtemp(prefix="abtruth_"))
            star = write_particle_stack(work / "stack", images, truth)
            particles = load_particles(star)
            pix = particles.pixel_size_A
            ws = build_workspace(particles.images, particles.ctf_params, pix, symmetry)
            for config in args.config:
                ab = dataclasses.replace(AbinitioOptions(), **json.loads(config))
                opts = ReconstructOptions(symmetry=symmetry, seed=seed, abinitio=ab)
                small = dataclasses.replace(
                    ws.for_resolution(ab.end_resolution_A), symmetry=ab.symmetry_for(symmetry)
                )
                c0 = time.process_time()
                rng = np.random.default_rng([seed, 3])
                start, _ = _one_abinitio(
                    ws, small, np.arange(ws.n), rng, opts, lambda *a, **k: None
                )
                cpu = time.process_time() - c0
                res = aligned_resolution_A(start, volume, pix)
                row = {"structure": structure, "seed": seed, "config": json.loads(config),
                       "abinitio_vs_truth_A": round(res, 2), "cpu_s": round(cpu, 1),
                       "load": round(os.getloadavg()[0], 2)}  # fmt: skip
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
