"""Memory a reconstruction asks of its node: what the job needs, at most what the node has.

A fixed request (it was 64,000 MB) cannot be scheduled on a smaller node and wastes a
large one. ``cryofac reconstruct`` holds, per particle, its half-plane Fourier values
(complex64) and CTF (float32) at the full box, plus smaller cropped copies for 2D and
ab-initio (:mod:`pipeline.reconstruction.workspace`; the images themselves are read
memory-mapped, in chunks); per map, padded (2 × box)³ complex volumes. So

    mem_MB = 1500 + n · box² · 12 B + 8 · (2 · box)³ · 8 B      (MB = 2^20 B)

(1500 MB: Python, numpy/scipy and the search tables; measured 1,147 MB RSS for 60
particles at box 64, the only calibration point: the other terms are the arrays'
sizes with a factor 2 of margin, not measured), capped at the node's memory: ``max_mem_mb`` when configured, else the largest node of the SLURM
partition (``sinfo``), else this machine's memory.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

BASE_MB = 1500
BYTES_PER_PARTICLE_PIXEL = 12
VOLUMES = 8


def reconstruct_mem_mb(particles: int, box_px: int) -> int:
    """Estimated peak memory (MB) of `cryofac reconstruct` on ``particles`` at ``box_px``."""
    per_particle = particles * box_px**2 * BYTES_PER_PARTICLE_PIXEL
    volumes = VOLUMES * (2 * box_px) ** 3 * 8
    return int(BASE_MB + (per_particle + volumes) / 2**20 + 0.5)


@functools.lru_cache(maxsize=8)
def node_mem_mb(partition: str = "") -> int | None:
    """Memory (MB) of the largest node of a SLURM ``partition``, or of this machine."""
    if partition and shutil.which("sinfo"):
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-p", partition, "-o", "%m"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            sizes = [int(s.strip().rstrip("+")) for s in out.split() if s.strip().rstrip("+")]
            if sizes:
                return max(sizes)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def capped_mem_mb(request: float, cap: int | None) -> int:
    """``request`` rounded up, at most ``cap`` (when known)."""
    value = int(request + 0.999)
    return min(value, cap) if cap else value
