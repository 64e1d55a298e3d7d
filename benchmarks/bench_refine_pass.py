"""Refinement iterations on particles stored on disk: CPU seconds per iteration and
how many particle images each iteration reads (and Fourier-transforms), resident or
streamed (``--memory-mb`` below the particles' size), with the poses and maps saved
so that two versions of the code can be compared.

Particles from ``bench_reconstruct_scale.py simulate``; refinement starts from the true
volume low-passed to 30 Å (``RefineOptions`` defaults, ``--iterations`` of them).

    nice -n 10 python benchmarks/bench_reconstruct_scale.py simulate --particles 3000 --box 128 --workdir W
    nice -n 10 python benchmarks/bench_refine_pass.py --workdir W --memory-mb 20 --out W/new.npz
    PYTHONPATH=<old checkout> nice -n 10 python benchmarks/bench_refine_pass.py ... --out W/old.npz
    python benchmarks/bench_refine_pass.py --compare W/old.npz W/new.npz
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def run(args) -> dict:
    from pipeline import backend
    from pipeline.reconstruction import refine, workspace
    from pipeline.reconstruction.options import RefineOptions
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.run import _refine_kwargs

    backend.use("cpu", args.threads)
    reads = {"images": 0}
    original = workspace.ParticleSource.values

    def counted(self, rows, plane, count):
        reads["images"] += len(rows)
        return original(self, rows, plane, count)

    workspace.ParticleSource.values = counted
    work = Path(args.workdir)
    particles = load_particles(work / "stack" / "particles.star")
    volume = np.load(work / "volume.npy")
    cpu0, t0 = time.process_time(), time.perf_counter()
    ws = workspace.build_workspace(
        particles.images, particles.ctf_params, particles.pixel_size_A,
        resident_MB=args.memory_mb,
    )  # fmt: skip
    build = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0}
    options = RefineOptions(
        max_iterations=args.iterations, global_iterations=args.global_iterations, top_k=args.top_k
    )
    per_it = []
    last = [time.process_time(), reads["images"]]

    def callback(it, maps, rotations, origins):
        now = time.process_time()
        per_it.append(
            {"iteration": it, "cpu_s": now - last[0], "images_read": reads["images"] - last[1]}
        )
        last[0], last[1] = now, reads["images"]

    cpu0, t0 = time.process_time(), time.perf_counter()
    result = refine.refine(
        ws, volume, np.random.default_rng(4), **_refine_kwargs(options), callback=callback
    )
    total = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0}
    for row, hist in zip(per_it, result.history, strict=False):
        row["box_px"], row["resolution_A"] = hist.get("box_px"), hist.get("resolution_A")
        row["wall_s"] = hist.get("seconds")
    record = {
        "particles": ws.n,
        "box": ws.box,
        "memory_mb": args.memory_mb,
        "streamed": ws.streamed,
        "threads": args.threads,
        "top_k": args.top_k,
        "build": build,
        "refine": total,
        "final_resolution_A": result.resolution_A,
        "iterations": per_it,
        "load_before": os.getloadavg(),
        "code": refine.__file__,
    }
    if args.out:
        np.savez(
            args.out,
            rotations=result.rotations,
            origins_px=result.origins_px,
            half1=result.half_maps[0],
            half2=result.half_maps[1],
            record=json.dumps(record),
        )
    return record


def compare(a: Path, b: Path) -> dict:
    x, y = np.load(a), np.load(b)
    scale = float(np.abs(x["half1"]).max())
    return {
        "rotation_max_diff": float(np.abs(x["rotations"] - y["rotations"]).max()),
        "origin_max_diff_px": float(np.abs(x["origins_px"] - y["origins_px"]).max()),
        "map_max_rel_diff": max(
            float(np.abs(x[h] - y[h]).max()) / scale for h in ("half1", "half2")
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--memory-mb", type=float, default=1000.0)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--global-iterations", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path)
    args = parser.parse_args()
    if args.compare:
        print(json.dumps(compare(*args.compare)))
        return
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
