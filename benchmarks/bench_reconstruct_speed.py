"""CPU seconds of the reconstruction's costly steps on one simulated stack, for comparing
two trees side by side in the same minutes (issue 23): run it once with ``PYTHONPATH`` on
each tree, at the same time, and compare the JSON lines.

On the blob volume of the issue-5 bar case (box 96, 1.5 Å/px, SNR 0.05; the stack is
simulated once into ``--workdir`` and reused):

- ``project``: one projection of 3,456 rotations (box 64, 504 pixels);
- ``global_search``: 300 particles against the ab-initio's finest grid (15 Å, box 34,
  32,242 rotations × 9 shifts, top 10);
- ``abinitio``: :func:`abinitio.abinitio` on every particle (``--iterations``, ``--starts``);
- ``refine``: :func:`refine.refine` from that map (``--refine-iterations``).

    PYTHONPATH=OLD nice -n 10 python benchmarks/bench_reconstruct_speed.py --workdir W &
    PYTHONPATH=NEW nice -n 10 python benchmarks/bench_reconstruct_speed.py --workdir W
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np


def timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, round(time.process_time() - cpu, 2), round(time.perf_counter() - wall, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    counts = {"particles": 1000, "iterations": 30, "starts": 4, "refine-iterations": 6}
    for name, default in {**counts, "threads": 2}.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()

    import pipeline
    from pipeline import backend
    from pipeline.geometry import random_rotations
    from pipeline.reconstruction import abinitio, fourier, refine, search
    from pipeline.reconstruction.grids import change_box, lowpass
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.symmetry import asymmetric_grid
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
    from pipeline.simulate.volume import blob_volume

    backend.use("cpu", args.threads)
    volume = blob_volume(96, np.random.default_rng(21), 40, (1.0, 2.5))
    star = args.workdir / "stack" / "particles.star"
    if not star.exists():
        images, truth = simulate_particle_stack(volume, args.particles, 1.5, snr=0.05, rng=11)
        write_particle_stack(args.workdir / "stack", images, truth)
    particles = load_particles(star)
    ws = build_workspace(particles.images, particles.ctf_params, 1.5)
    small = ws.for_resolution(15.0)
    record = {"code": str(Path(pipeline.__file__).parents[1]), "load": os.getloadavg()[0]}

    rng = np.random.default_rng(0)
    grid64 = fourier.pad_fourier(rng.standard_normal((64, 64, 64)).astype(np.float32))
    plane = fourier.half_plane(64)
    rots = random_rotations(3456, rng)
    _, record["project_cpu_s"], _ = timed(lambda: fourier.project(grid64, rots, plane, 504))

    model = lowpass(change_box(volume, small.box), 15.0, small.pixel_size_A)
    step = min(20.0, max(7.5, math.degrees(1.3 / small.radius_px(15.0))))
    grid = asymmetric_grid(search.so3_grid(step), "C1")
    data = small.search_data(15.0)
    refs = fourier.project(fourier.pad_fourier(model), grid, small.plane, data.count)
    shifts = search.shift_grid(2.0, 1.18)
    _, record["global_search_cpu_s"], _ = timed(
        lambda: search.global_search(refs, data, np.arange(300), shifts, top_k=10)
    )

    start, record["abinitio_cpu_s"], record["abinitio_wall_s"] = timed(
        lambda: abinitio.abinitio(
            small, np.random.default_rng(3), n_iterations=args.iterations, n_starts=args.starts
        )
    )
    result, record["refine_cpu_s"], record["refine_wall_s"] = timed(
        lambda: refine.refine(
            ws,
            np.asarray(change_box(start, ws.box)),
            np.random.default_rng(4),
            max_iterations=args.refine_iterations,
        )
    )
    record["refine_half_map_A"] = round(float(result.resolution_A), 2)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
