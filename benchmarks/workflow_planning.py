"""Dry-run planning time and memory of the cryofac workflow for large acquisitions.

Creates N empty movie files (old modification times, so past the quiet period)
and times ``cryofac process RAW --out OUT --dry-run`` as a child process: the
movie scan, batching, and Snakemake building the whole DAG (N / batch_size
batches × 6 rules + gathering). Peak memory is the child's maximum resident set
size (Snakemake and its parser included).

    python benchmarks/workflow_planning.py 1000 10000 50000 [--batch-size 100]

Target (issue 6): < 30 s and < 2 GB for 50,000 movies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_acquisition(raw: Path, n: int) -> None:
    raw.mkdir(parents=True)
    past = time.time() - 3600
    for i in range(n):
        path = raw / f"FoilHole_{30000000 + i}_Data_{20000000 + i // 100}_fractions.tiff"
        path.touch()
        os.utime(path, (past, past))


def plan(raw: Path, out: Path, batch_size: int) -> tuple[float, float, float, str]:
    """(wall s, peak RSS MiB, CPU s, 'total N' line) of one dry run in a child process."""
    script = (
        "import resource, sys, time\n"
        "from cryofac.cli import main\n"
        "t = time.perf_counter()\n"
        "code = main(sys.argv[1:])\n"
        "dt = time.perf_counter() - t\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "own = resource.getrusage(resource.RUSAGE_SELF)\n"
        "cpu = kids.ru_utime + kids.ru_stime + own.ru_utime + own.ru_stime\n"
        "rss = max(kids.ru_maxrss, own.ru_maxrss) / 1024\n"
        "print(f'BENCH {dt:.3f} {rss:.1f} {cpu:.3f}', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "process", str(raw), "--out", str(out)]
        + ["--batch-size", str(batch_size), "--dry-run"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"dry run failed: {result.stderr.strip()}")
    line = next(x for x in result.stderr.splitlines() if x.startswith("BENCH "))
    _, seconds, mib, cpu = line.split()
    jobs = next((x for x in result.stdout.splitlines() if x.startswith("total")), "total ?")
    return float(seconds), float(mib), float(cpu), jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", nargs="*", type=int, default=[1000, 10000, 50000])
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    print("| movies | batches | jobs planned | wall time (s) | CPU time (s) | peak memory (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.counts:
        with tempfile.TemporaryDirectory() as tmp:
            raw, out = Path(tmp) / "raw", Path(tmp) / "out"
            make_acquisition(raw, n)
            seconds, mib, cpu, jobs = plan(raw, out, args.batch_size)
            batches = n // args.batch_size
            print(
                f"| {n} | {batches} | {jobs.split()[-1]} | {seconds:.1f} | {cpu:.1f} | {mib:.0f} |"
            )


if __name__ == "__main__":
    main()
