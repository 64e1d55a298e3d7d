"""Which movies go into which batch, and when downstream stages run.

Pure functions with no Snakemake import, shared by the Snakefile (at DAG
construction) and ``cryofac process``.

Batch membership never changes once decided: a batch is fixed by its manifest
``OUT/batches/<batch>/movies.txt`` (written by the workflow's first rule for the
batch). Movies that are not in any manifest are sorted by name and cut into
fixed chunks of ``batch_size`` after the existing batches; only complete chunks
become batches unless ``flush`` is set (the acquisition is over), so a movie that
lands late is never slipped into a batch that has already run.

A movie is *eligible* when its name matches one of the movie patterns, matches no
exclude pattern (temporary names of files still being written) and was last
modified at least ``quiet_period_s`` seconds ago.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MOVIE_PATTERNS = ("*.mrc", "*.mrcs", "*.tif", "*.tiff", "*.eer")
EXCLUDE_PATTERNS = (".*", "*~", "*.tmp", "*.part", "*.partial", "*gain*", "*Gain*")

BATCHES_DIR = "batches"
MANIFEST = "movies.txt"


def batch_name(index: int) -> str:
    """Folder name of batch ``index`` (0-based): ``b00000``, ``b00001``, ..."""
    return f"b{index:05d}"


def batch_index(name: str) -> int:
    """Inverse of :func:`batch_name`; ``ValueError`` for anything else."""
    if len(name) < 2 or name[0] != "b" or not name[1:].isdigit():
        raise ValueError(f"not a batch name: {name!r}")
    return int(name[1:])


def stem(movie: str) -> str:
    """Movie name without folder and extension(s) we know (``.mrcs``, ``.tiff``, ...)."""
    name = os.path.basename(movie)
    for ext in (".mrcs", ".mrc", ".tiff", ".tif", ".eer"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


@dataclass
class MovieScan:
    """Result of one look at the raw-data folder (names relative to it, sorted)."""

    eligible: list[str]
    recent: list[str]  # match a pattern but are still inside the quiet period
    first_mtime: float | None = None
    last_mtime: float | None = None
    mtimes: dict[str, float] = field(default_factory=dict)


def scan_movies(
    raw_dir: str | os.PathLike,
    patterns: Sequence[str] = MOVIE_PATTERNS,
    exclude: Sequence[str] = EXCLUDE_PATTERNS,
    quiet_period_s: float = 0.0,
    now: float | None = None,
) -> MovieScan:
    """List the movies directly inside ``raw_dir`` (not sub-folders such as ``truth/``).

    One ``os.scandir`` pass; 50,000 entries take well under a second.
    """
    now = time.time() if now is None else now
    eligible: list[str] = []
    recent: list[str] = []
    mtimes: dict[str, float] = {}
    # one compiled alternative per list: 50,000 names cost 2 regex matches each
    wanted = _any_of(patterns)
    unwanted = _any_of(exclude)
    with os.scandir(raw_dir) as entries:
        for entry in entries:
            name = entry.name
            if wanted is None or not wanted(name):
                continue
            if unwanted is not None and unwanted(name):
                continue
            try:
                if not entry.is_file():
                    continue
                mtime = entry.stat().st_mtime
            except FileNotFoundError:  # removed while we looked
                continue
            if now - mtime < quiet_period_s:
                recent.append(name)
            else:
                eligible.append(name)
                mtimes[name] = mtime
    eligible.sort()
    recent.sort()
    values = list(mtimes.values())
    return MovieScan(
        eligible=eligible,
        recent=recent,
        first_mtime=min(values) if values else None,
        last_mtime=max(values) if values else None,
        mtimes=mtimes,
    )


def _any_of(patterns: Sequence[str]):
    """``match`` of one regex equivalent to ``any(fnmatchcase(name, p) for p in patterns)``."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


def read_manifests(out_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Existing batches: batch name -> movie names, from ``OUT/batches/*/movies.txt``."""
    root = Path(out_dir) / BATCHES_DIR
    batches: dict[str, list[str]] = {}
    if not root.is_dir():
        return batches
    with os.scandir(root) as entries:
        for entry in entries:
            try:
                batch_index(entry.name)
            except ValueError:
                continue
            manifest = Path(entry.path) / MANIFEST
            try:
                text = manifest.read_text()
            except FileNotFoundError:
                continue
            batches[entry.name] = [line for line in text.splitlines() if line.strip()]
    return dict(sorted(batches.items()))


def plan_batches(
    existing: dict[str, list[str]],
    eligible: Iterable[str],
    batch_size: int,
    flush: bool = False,
) -> tuple[dict[str, list[str]], list[str]]:
    """Extend ``existing`` batches with new ones cut from the unassigned movies.

    Returns ``(batches, waiting)``: every batch (old ones unchanged, new ones in
    sorted movie order, numbered after the highest existing batch) and the
    movies left waiting for a complete chunk.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    assigned = {movie for movies in existing.values() for movie in movies}
    unassigned = sorted(m for m in eligible if m not in assigned)
    batches = dict(existing)
    next_index = max((batch_index(b) for b in existing), default=-1) + 1
    full = len(unassigned) // batch_size
    for k in range(full):
        batches[batch_name(next_index + k)] = unassigned[k * batch_size : (k + 1) * batch_size]
    waiting = unassigned[full * batch_size :]
    if flush and waiting:
        batches[batch_name(next_index + full)] = waiting
        waiting = []
    return batches, waiting


def particle_buckets(min_particles: int, growth: float, count: int) -> list[int]:
    """The particle counts at which a reconstruction runs, up to ``count``.

    ``min_particles``, then each previous value × ``growth`` (rounded up, and at
    least one more), so a growing dataset is re-reconstructed a logarithmic number
    of times: 1,000 → 1,500 → 2,250 → ... with growth 1.5.
    """
    if min_particles < 1 or growth <= 1.0:
        raise ValueError("min_particles must be ≥ 1 and growth > 1")
    buckets: list[int] = []
    value = min_particles
    while value <= count:
        buckets.append(value)
        value = max(value + 1, math.ceil(value * growth))
    return buckets


def reconstruction_target(
    min_particles: int, growth: float, count: int, final: bool = False
) -> int | None:
    """Particle count of the reconstruction the run should have now, or None.

    The largest bucket not above ``count``; with ``final`` (acquisition over) all
    ``count`` particles, once there are at least ``min_particles``.
    """
    if count < min_particles:
        return None
    if final:
        return count
    return particle_buckets(min_particles, growth, count)[-1]
