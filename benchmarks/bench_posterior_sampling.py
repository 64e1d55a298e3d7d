"""Issue 22: CPU of ab-initio's global search with the ten best poses kept against ten
poses drawn from the whole posterior (``global_search(sample=10)``), on random particles
and references of ab-initio's size at 20 Å (box 42: 188 Fourier pixels, 32,242
orientations, 25 shifts, 300 particles, 2 threads).

    python benchmarks/bench_posterior_sampling.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from pipeline import backend
    from pipeline.reconstruction import fourier, search
    from pipeline.reconstruction.search import SearchData

    backend.use("cpu", 2)
    rng = np.random.default_rng(0)
    plane = fourier.half_plane(42)
    count = plane.count(11)
    n, n_ref = 300, 32242
    size = plane.kx.size
    values = (rng.standard_normal((n, size)) + 1j * rng.standard_normal((n, size))).astype(
        np.complex64
    )
    refs = (rng.standard_normal((n_ref, count)) + 1j * rng.standard_normal((n_ref, count))).astype(
        np.complex64
    )
    data = SearchData(
        values, np.ones((n, size), np.float32), np.ones(size, np.float32), plane, count
    )
    shifts = search.shift_grid(3.0, 1.5)
    print(f"{n} particles, {n_ref} orientations, {len(shifts)} shifts, {count} Fourier pixels")
    for name, kwargs in (
        ("top 10", {"top_k": 10}),
        ("sampled 10", {"sample": 10, "log_scale": 0.003, "rng": rng}),
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        search.global_search(refs, data, np.arange(n), shifts, **kwargs)
        print(
            f"{name}: {time.process_time() - cpu:.2f} CPU-s, {time.perf_counter() - wall:.2f} s wall"
        )


if __name__ == "__main__":
    main()
