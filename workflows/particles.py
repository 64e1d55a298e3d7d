"""Gathering the particles of finished batches, and fixed-size snapshots of them.

Batches are immutable, so the gathered list in batch order is append-only: the
first ``n`` particles are always the same particles. A reconstruction at ``n``
particles is therefore a function of the batches alone, whenever it runs.
Stack paths (``N@stack.mrcs``) are rewritten relative to each written STAR file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

OPTICS_KEYS = (
    "rlnAmplitudeContrast",
    "rlnSphericalAberration",
    "rlnVoltage",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
)


def _rebase_images(names: pd.Series, source_dir: Path, target_dir: Path) -> pd.Series:
    """Rewrite ``N@stack`` so the stack path is relative to ``target_dir``."""

    def rebase(name: str) -> str:
        index, _, stack = name.partition("@")
        path = Path(stack)
        if not path.is_absolute():
            path = source_dir / path if (source_dir / path).exists() else path
        return f"{index}@{os.path.relpath(path.resolve(), target_dir.resolve())}"

    return names.astype(str).map(rebase)


def merge_tables(tables: Sequence, sources: Sequence[Path], target: Path):
    """One :class:`ParticleTable` from several, with shared optics groups merged.

    Optics groups with identical optics (voltage, Cs, amplitude contrast, pixel
    size, box) become one group; particle rows keep their order.
    """
    from pipeline.io.particles import ParticleTable

    optics_rows: list[dict] = []
    key_to_group: dict[tuple, int] = {}
    frames = []
    for table, source in zip(tables, sources, strict=True):
        remap: dict[int, int] = {}
        for row in table.optics.to_dict("records"):
            key = tuple(round(float(row[k]), 6) for k in OPTICS_KEYS if k in row)
            if key not in key_to_group:
                key_to_group[key] = len(key_to_group) + 1
                new = dict(row)
                new["rlnOpticsGroup"] = key_to_group[key]
                new["rlnOpticsGroupName"] = f"opticsGroup{key_to_group[key]}"
                optics_rows.append(new)
            remap[int(row["rlnOpticsGroup"])] = key_to_group[key]
        frame = table.particles.copy()
        frame["rlnOpticsGroup"] = frame["rlnOpticsGroup"].astype(int).map(remap)
        frame["rlnImageName"] = _rebase_images(frame["rlnImageName"], source, target)
        frames.append(frame)
    particles = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ParticleTable(optics=pd.DataFrame(optics_rows), particles=particles)


def gather(batch_stars: Sequence[str | os.PathLike], out_star: str | os.PathLike) -> int:
    """Concatenate the batches' ``particles.star`` (those that exist) into ``out_star``.

    Returns the number of particles; with none, no STAR file is written (RELION
    files need at least one particle) and only the count file says 0.
    """
    from pipeline.io.particles import read_particles_star, write_particles_star

    out_star = Path(out_star)
    tables, sources = [], []
    for path in batch_stars:
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            table = read_particles_star(path)
            if len(table):
                tables.append(table)
                sources.append(path.parent)
    out_star.parent.mkdir(parents=True, exist_ok=True)
    if not tables:
        out_star.unlink(missing_ok=True)
        return 0
    merged = merge_tables(tables, sources, out_star.parent)
    write_particles_star(out_star, merged)
    return len(merged)


def snapshot(gathered_star: str | os.PathLike, n: int, out_star: str | os.PathLike) -> int:
    """Write the first ``n`` gathered particles to ``out_star`` (paths rebased)."""
    from pipeline.io.particles import ParticleTable, read_particles_star, write_particles_star

    gathered_star, out_star = Path(gathered_star), Path(out_star)
    table = read_particles_star(gathered_star)
    if len(table) < n:
        raise ValueError(f"{gathered_star}: {len(table)} particles, fewer than {n}")
    particles = table.particles.iloc[:n].copy()
    out_star.parent.mkdir(parents=True, exist_ok=True)
    particles["rlnImageName"] = _rebase_images(
        particles["rlnImageName"], gathered_star.parent, out_star.parent
    )
    used = set(particles["rlnOpticsGroup"].astype(int))
    optics = table.optics[table.optics["rlnOpticsGroup"].astype(int).isin(used)]
    write_particles_star(out_star, ParticleTable(optics=optics, particles=particles))
    return n


def write_count(path: str | os.PathLike, count: int, batches: int) -> None:
    from workflows.summary import atomic_write_text

    atomic_write_text(path, json.dumps({"particles": count, "batches": batches}) + "\n")
