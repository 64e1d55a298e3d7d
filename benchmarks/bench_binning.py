"""CPU time of each reconstruction stage on the full box against the Fourier-cropped box
it now works on (same particles, same code otherwise), measured with
``time.process_time`` so that a loaded, shared machine still gives comparable figures.

    python benchmarks/bench_binning.py STACK/particles.star --abinitio-iterations 3 \
        --class-iterations 2

Stages: 2D classification (at ``Class2DOptions.resolution_A``), ab-initio iterations
(one start, at the end resolution) and one back-projection + reconstruction of every
particle (what each refinement iteration ends with), full box against the crop.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def _cpu(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("particles", type=Path)
    parser.add_argument("--abinitio-iterations", type=int, default=3)
    parser.add_argument("--class-iterations", type=int, default=2)
    parser.add_argument("--refine-resolution", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.reconstruction import abinitio, class2d
    from pipeline.reconstruction.options import AbinitioOptions, Class2DOptions
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import backproject_particles, build_workspace

    backend.use("cpu", args.threads)
    particles = load_particles(args.particles)
    ws = build_workspace(particles.images, particles.ctf_params, particles.pixel_size_A)
    c2d, ab = Class2DOptions(), AbinitioOptions()
    rows = []
    for name, small in [
        ("2D classification", ws.for_resolution(c2d.resolution_A)),
        ("ab-initio", ws.for_resolution(ab.end_resolution_A)),
        (f"back-projection at {args.refine_resolution:g} Å", None),
    ]:
        times = {}
        for label, work in [("full", ws), ("cropped", small)]:
            if name.startswith("2D"):
                t, _ = _cpu(
                    lambda w=work: class2d.classify_2d(
                        w, 4, np.random.default_rng(0), n_iterations=args.class_iterations
                    )
                )
            elif name == "ab-initio":
                t, _ = _cpu(
                    lambda w=work: abinitio.abinitio(
                        w, np.random.default_rng(0), n_iterations=args.abinitio_iterations,
                        n_starts=1,
                    )
                )  # fmt: skip
            else:
                from pipeline.reconstruction.grids import crop_box

                if work is None:
                    work = ws.cropped(crop_box(ws.radius_px(args.refine_resolution) + 6, ws.box))
                rot = np.tile(np.eye(3), (ws.n, 1, 1))
                org = np.zeros((ws.n, 2))

                def bp(w=work, rot=rot, org=org):
                    return backproject_particles(w, np.arange(w.n), rot, org).reconstruct(
                        w.box // 2 - 1
                    )

                t, _ = _cpu(bp)
            times[label] = (t, work.box)
        rows.append((name, times))
    print(
        f"{ws.n} particles, box {ws.box}, {ws.pixel_size_A:g} Å/px; {args.threads} threads; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| stage | full box: CPU s (box) | cropped: CPU s (box) | ratio |")
    print("|---|---:|---:|---:|")
    for name, times in rows:
        (tf, bf), (tc, bc) = times["full"], times["cropped"]
        print(f"| {name} | {tf:.1f} ({bf}) | {tc:.1f} ({bc}) | {tf / max(tc, 1e-9):.1f}× |")


if __name__ == "__main__":
    main()
