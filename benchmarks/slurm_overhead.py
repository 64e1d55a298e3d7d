"""SLURM costs of the cryofac workflow on a real cluster (workflows/cluster/slurm-up.sh).

1. ``overhead``: runs ``cryofac process --profile slurm`` on N batches of placeholder
   movies with the stand-in ``cryofac`` of the tests (tests/workflows/fake_cryofac.py,
   so the science costs almost nothing) and reads, per SLURM job, from the run's
   ``cluster_jobs.tsv`` (sacct) and the steps' Snakemake benchmarks:
   queue wait (start - submit), job elapsed, the four steps' own wall time, and the
   overhead = elapsed - steps (the job-side Snakemake that runs the group job).
   Also the controller's wall time per batch.
2. ``submit``: the planning cost of a 50,000-movie session (500 batches of 100;
   ``cryofac process -n --profile slurm``, the DAG of every job) and the cost of
   submitting its 500 batch jobs, as 500 real ``sbatch --test-only`` calls with the
   group job's request (partition, account, CPUs, memory, time, GPUs) - the
   controller's sbatch traffic without running anything.

    python benchmarks/slurm_overhead.py overhead --batches 4
    python benchmarks/slurm_overhead.py submit --movies 50000 --batch-size 100

Times in seconds.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.workflows.conftest import FAKE, write_movies  # noqa: E402
from tests.workflows.test_slurm import cluster_resources  # noqa: E402
from workflows import cli  # noqa: E402


def _profile(root: Path, poll_s: int) -> Path:
    profile = root / "profile"
    shutil.copytree(cli.PROFILES / "slurm", profile)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["slurm-init-seconds-before-status-checks"] = poll_s
    settings["seconds-between-status-checks"] = poll_s
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    return profile


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _seconds(hms: str) -> float:
    parts = [float(p) for p in hms.replace("-", ":").split(":")]
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total


def overhead(batches: int, poll_s: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="cryofac-slurm-bench-"))
    raw, out = root / "raw", root / "out"
    write_movies(raw, [f"m{i:04d}.tiff" for i in range(4 * batches)])
    exe = root / "bin" / "cryofac"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(0o755)
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cryofac": str(exe),
                "batch_size": 4,
                "movies": {"quiet_period_s": 0},
                "downstream": {"min_particles": 10**9, "growth": 1.5},
                "resources": cluster_resources(),
            }
        )
    )
    _, wall = _process(raw, out, config, str(_profile(root, poll_s)))
    rows = list(csv.DictReader((out / "cluster_jobs.tsv").open(), delimiter="\t"))
    waits, elapsed, steps, over = [], [], [], []
    for row in rows:
        waits.append(_ts(row["started"]) - _ts(row["submitted"]))
        elapsed.append(_seconds(row["elapsed"]))
        own = 0.0
        for step in ("motioncorr", "ctf", "pick", "extract"):
            bench = out / "benchmarks" / row["batch"] / f"{step}.tsv"
            own += float(next(csv.DictReader(bench.open(), delimiter="\t"))["s"])
        steps.append(own)
        over.append(elapsed[-1] - own)
    print(f"{len(rows)} batch jobs, status poll {poll_s} s, controller wall {wall:.1f} s")
    for name, values in (
        ("queue wait (start - submit)", waits),
        ("job elapsed", elapsed),
        ("four steps' own time", steps),
        ("job overhead (elapsed - steps)", over),
    ):
        print(
            f"  {name}: median {statistics.median(values):.1f} s,"
            f" min {min(values):.1f}, max {max(values):.1f}"
        )
    print(f"  controller wall per batch: {wall / len(rows):.1f} s")
    shutil.rmtree(root, ignore_errors=True)


def _process(raw: Path, out: Path, config: Path, profile: str, *extra: str):
    """Run ``cryofac process`` to the end; (the finished process, wall seconds). Exits with
    its stderr when it fails."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "process", str(raw), "--out", str(out)]
        + ["--config", str(config), "--profile", profile, *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(result.stderr)
    return result, wall


def submit(movies: int, batch_size: int) -> None:
    from benchmarks.workflow_planning import make_acquisition

    root = Path(tempfile.mkdtemp(prefix="cryofac-slurm-submit-"))
    raw = root / "raw"
    make_acquisition(raw, movies)
    config = root / "config.yaml"
    resources = cluster_resources()
    config.write_text(yaml.safe_dump({"batch_size": batch_size, "resources": resources}))
    result, planning = _process(raw, root / "out", config, "slurm", "-n")
    total = next((x for x in result.stdout.splitlines() if x.strip().startswith("total")), "")
    batches = movies // batch_size
    print(f"planning {movies} movies ({batches} batches): {planning:.1f} s; jobs {total.split()}")
    # the group job's request: largest threads/memory, summed runtime, GPUs of its steps
    group = [resources[s] for s in ("motioncorr", "ctf", "pick", "extract")]
    request = [
        "-p",
        group[0]["partition"],
        "-A",
        group[0]["account"],
        f"--cpus-per-task={max(r['threads'] for r in group)}",
        "--mem",
        str(max(r["mem_mb"] for r in group)),
        "-t",
        str(sum(r["runtime"] for r in group)),
        f"--gpus={max(r['gpu'] for r in group)}",
    ]
    costs = []
    refused = 0
    for b in range(batches):
        t = time.perf_counter()
        answer = subprocess.run(
            ["sbatch", "--test-only", *request, f"--job-name=b{b:05d}", "--wrap", "true"],
            capture_output=True,
            text=True,
            cwd=root,
        )
        costs.append(time.perf_counter() - t)
        refused += "to start" not in answer.stderr
    print(
        f"sbatch --test-only x {batches} ({' '.join(request)}): total {sum(costs):.1f} s,"
        f" median {statistics.median(costs) * 1000:.0f} ms, max {max(costs) * 1000:.0f} ms;"
        f" refused {refused}"
    )
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--batches", type=int, default=4)
    o.add_argument("--poll", type=int, default=2, help="status poll interval, s")
    s = sub.add_parser("submit")
    s.add_argument("--movies", type=int, default=50000)
    s.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(REPO))
    if args.what == "overhead":
        overhead(args.batches, args.poll)
    else:
        submit(args.movies, args.batch_size)


if __name__ == "__main__":
    main()
