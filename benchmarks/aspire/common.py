"""Shared helpers of the ASPIRE side-by-side benchmarks (project venv side)."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import cpu_model, load_average

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ASPIRE_PYTHON = ROOT / ".venv-aspire" / "bin" / "python"


def machine_line() -> str:
    """CPU model, visible cores and the 1/5/15-min load averages, for the results file."""
    return (
        f"{cpu_model()}; {os.cpu_count()} cores visible; load average (1/5/15 min) {load_average()}"
    )


@dataclass
class Timed:
    """Wall-clock and CPU seconds of a child process (CPU = user + system of the child)."""

    wall_s: float
    cpu_s: float
    returncode: int
    output: str


def run_child(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Timed:
    """Run ``cmd`` to completion; wall and CPU seconds from getrusage(RUSAGE_CHILDREN).

    ``cwd``: the child's working directory (ASPIRE writes ``logs/`` and checkpoint files
    into it; give absolute paths in ``cmd`` when setting it).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, proc.returncode, proc.stdout + proc.stderr)


def thread_env(threads: int) -> dict:
    """Environment limiting BLAS/OpenMP/FFT threads of a child process to ``threads``."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    return env
