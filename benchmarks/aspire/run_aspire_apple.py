"""Run ASPIRE's APPLE picker on MRC micrographs (runs in ASPIRE's OWN venv, not the project's).

    .venv-aspire/bin/python benchmarks/aspire/run_aspire_apple.py \
        --particle-size-px 132 --threads 2 --out apple.json mic_0.mrc mic_1.mrc

Writes JSON: {"aspire_version", "micrographs": [{"path", "centers_xy_px", "wall_s",
"cpu_s"}]}. Centres are APPLE's output, (x, y) in pixels of the full micrograph (APPLE swaps
its columns "to align with Relion" and adds back the discarded margins).

Settings (documented in README.md): particle size = the true diameter in pixels; minimum /
maximum particle size 0.5× / 1.3× (the default maximum, 2×, makes scipy's binary erosion
exhaust memory on 4096² micrographs); SVM training-set sizes tau1 / tau2 = 3 % / 30 % of the
number of query windows of this micrograph size (APPLE's defaults are absolute numbers tuned
for ~4000² micrographs at its query-window size). Everything else is APPLE's default.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def query_windows(particle_px: int, size_px: int, margin_px: int = 199, shrink: int = 2) -> int:
    """Number of APPLE query windows on a ``size_px``² micrograph (after margins and binning)."""
    query = int(round(particle_px * 2 / 3))
    query -= query % 4
    shrunk, q = (size_px - margin_px) // shrink, query // shrink
    return ((shrunk - q) // (q // 2) + 1) ** 2


def make_apple(particle_px: int, size_px: int, threads: int):
    """APPLE with the settings above for ``particle_px`` particles on ``size_px``² micrographs."""
    from aspire.apple.apple import Apple

    windows = query_windows(particle_px, size_px)
    return Apple(
        particle_px,
        min_particle_size=particle_px // 2,
        max_particle_size=int(1.3 * particle_px),
        tau1=max(1, int(0.03 * windows)),
        tau2=max(2, int(0.3 * windows)),
        conv_map_nthreads=threads,
        n_processes=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("micrographs", nargs="+")
    parser.add_argument("--particle-size-px", type=int, required=True)
    parser.add_argument("--size-px", type=int, required=True, help="micrograph side (pixels)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import aspire

    apple = make_apple(args.particle_size_px, args.size_px, args.threads)
    rows = []
    for path in args.micrographs:
        wall, cpu = time.perf_counter(), time.process_time()
        centers = np.asarray(apple.process_micrograph_centers(path), dtype=np.float64)
        rows.append(
            {
                "path": path,
                "centers_xy_px": centers.reshape(-1, 2).tolist(),
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
            }
        )
        print(f"{path}: {len(rows[-1]['centers_xy_px'])} centres, {rows[-1]['wall_s']:.1f} s")
    with open(args.out, "w") as handle:
        json.dump({"aspire_version": aspire.__version__, "micrographs": rows}, handle)


if __name__ == "__main__":
    main()
