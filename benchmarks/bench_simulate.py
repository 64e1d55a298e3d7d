"""Simulator speed: ground-truth map, particle stack, micrograph, movie, acquisition.

Times (wall clock, best of ``--repeat``) of the calls the tests, the workflow and the demo
make, at the sizes the issue names: 3,000 particles of box 96 at 1.5 Å, a 2048² micrograph
at 1 Å with 100 particles, a 1024² movie of 16 frames at 0.83 Å, and
``cryofac simulate acquisition --movies 4`` with its defaults. The map is cached on disk
(``$CRYOFAC_CACHE``); the first, uncached computation is timed separately in a fresh cache.
The machine's load average is recorded because the figures scale with free cores.

    python benchmarks/bench_simulate.py --out benchmarks/results/simulate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

CPU: dict[str, float] = {}


def _best(function, repeat: int, name: str = "") -> float:
    """Best wall time of ``repeat`` calls; the CPU time of that call goes to ``CPU[name]``."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        function()
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    CPU[name] = best[1]
    return best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from cryofac.cli import main as cryofac_main
    from pipeline.simulate import (
        reference_volume,
        simulate_micrograph,
        simulate_movie,
        simulate_particle_stack,
    )
    from pipeline.simulate.acquisition import acquisition_box

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        reference_volume(128, 1.5, cache=cache)
        results["volume_128_at_1.5A_uncached_s"] = time.perf_counter() - start
    v96 = reference_volume(96, 1.5)
    v_mic = reference_volume(acquisition_box(1.0), 1.0)
    v_movie = reference_volume(acquisition_box(0.83), 0.83)
    results["volume_cached_s"] = _best(lambda: reference_volume(96, 1.5), args.repeat, "v")
    results["particles_3000_box96_s"] = _best(
        lambda: simulate_particle_stack(v96, 3000, 1.5, rng=1), args.repeat, "particles"
    )
    simulate_micrograph(v_mic, (256, 256), 1.0, rng=0)  # prepare the projector once
    results["micrograph_2048_100_particles_s"] = _best(
        lambda: simulate_micrograph(v_mic, (2048, 2048), 1.0, rng=1), args.repeat, "micrograph"
    )
    simulate_movie(v_movie, (256, 256), 0.83, n_frames=2, rng=0)
    results["movie_1024_16_frames_s"] = _best(
        lambda: simulate_movie(v_movie, (1024, 1024), 0.83, n_frames=16, rng=1),
        args.repeat,
        "movie",
    )
    with tempfile.TemporaryDirectory() as raw:
        start, cpu = time.perf_counter(), time.process_time()
        code = cryofac_main(["simulate", "acquisition", raw, "--movies", "4", "--seed", "1"])
        results["cli_acquisition_4_movies_s"] = time.perf_counter() - start
        CPU["acquisition"] = time.process_time() - cpu
        assert code == 0
    report = {
        "results": {k: round(v, 2) for k, v in results.items()},
        "cpu_s_of_those_calls": {k: round(v, 2) for k, v in CPU.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
