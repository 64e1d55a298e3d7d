"""Gathering the particles of finished batches, and fixed-size snapshots of them.

Batches are immutable, so the gathered list in batch order is append-only: the
first ``n`` particles are always the same particles. A reconstruction at ``n``
particles is therefore a function of the batches alone, whenever it runs.
Stack paths (``N@stack.mrcs``) are rewritten relative to the run folder (``root``,
default: the working folder, where Snakemake runs the rules), where RELION resolves
them when it runs there, like ``rlnMicrographName``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.io.particles import OPTICS_COLUMNS

#: optics that make two groups one: every optics column but the group's number and name
OPTICS_KEYS = tuple(c for c in OPTICS_COLUMNS if c not in ("rlnOpticsGroup", "rlnOpticsGroupName"))


#: particle columns that name files (``N@stack`` or a path)
PATH_COLUMNS = ("rlnImageName", "rlnMicrographName")


def _rebase_paths(names: pd.Series, source_dir: Path, root: Path) -> pd.Series:
    """Rewrite ``N@stack`` so the stack path is relative to ``root`` (the run folder).

    A stack is found relative to ``source_dir`` (files written before issue 18), a
    folder above it or the working folder (pipeline.io.paths); one outside ``root``
    is written absolute, one not found is left as it is. Each distinct stack is
    looked up once.
    """
    from pipeline.io.paths import relative_to_root, resolve_data_path, split_image_name

    anchor = Path(source_dir) / "particles.star"
    stacks: dict[str, str] = {}

    def rebase(name: str) -> str:
        index, stack = split_image_name(name)
        if stack not in stacks:
            found = resolve_data_path(stack, anchor)
            stacks[stack] = relative_to_root(found, root) if found.exists() else stack
        return f"{index}@{stacks[stack]}" if index else stacks[stack]

    return names.astype(str).map(rebase)


def _rows_for(table, source: Path, root: Path, remap: dict[int, int]) -> pd.DataFrame:
    """A batch's particle rows with optics groups renumbered and paths from ``root``."""
    frame = table.particles.copy()
    frame["rlnOpticsGroup"] = frame["rlnOpticsGroup"].astype(int).map(remap)
    for column in PATH_COLUMNS:
        if column in frame.columns:
            frame[column] = _rebase_paths(frame[column], source, root)
    return frame


def merge_tables(tables: Sequence, sources: Sequence[Path], target: Path):
    """One :class:`ParticleTable` from several, with shared optics groups merged.

    Optics groups with identical optics (voltage, Cs, amplitude contrast, pixel
    size, box) become one group; particle rows keep their order. Paths are written
    relative to ``target`` (the run folder).
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
        frames.append(_rows_for(table, source, target, remap))
    particles = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return ParticleTable(optics=pd.DataFrame(optics_rows), particles=particles)


#: record of what ``particles.star`` holds: the batch STAR files appended, in order,
#: each with its size and mtime, so a later gather appends only the new batches
RECORD = "gathered.json"
LOCK = "gathered.lock"


def _signature(path: Path) -> list:
    info = path.stat()
    return [str(path), info.st_size, info.st_mtime_ns]


def _existing(batch_stars: Sequence[str | os.PathLike]) -> list[Path]:
    paths = [Path(p) for p in batch_stars]
    return [p for p in paths if p.exists() and p.stat().st_size > 0]


@contextlib.contextmanager
def gathered_lock(state_dir: Path, shared: bool = False):
    """flock in ``state_dir``: the gatherer appends, readers see whole rows."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def gather(
    batch_stars: Sequence[str | os.PathLike],
    out_star: str | os.PathLike,
    state_dir: str | os.PathLike | None = None,
    root: str | os.PathLike = ".",
) -> int:
    """Concatenate the batches' ``particles.star`` (those that exist) into ``out_star``.

    Incremental: when the batches gathered before are unchanged and come first, only
    the new batches are read and their rows appended (cost proportional to the new
    batches); otherwise everything is gathered again. Returns the number of
    particles; with none, no STAR file is written (RELION files need at least one
    particle) and only the count file says 0. ``state_dir`` holds the record of what
    was gathered and the lock (default: beside ``out_star``; the workflow uses
    ``OUT/.cryofac``). Paths are written relative to ``root`` (the run folder).
    """
    out_star, root = Path(out_star), Path(root)
    state = Path(state_dir) if state_dir is not None else out_star.parent
    stars = _existing(batch_stars)
    with gathered_lock(state):
        record = _read_record(state)
        done = record.get("batches", [])
        if (
            record
            and record.get("root") == _root_from(out_star, root)
            and out_star.exists()
            and len(done) <= len(stars)
            and all(_signature(stars[i]) == done[i] for i in range(len(done)))
        ):
            appended = _append(out_star, stars[len(done) :], record, state, root)
            if appended is not None:
                return appended
        return _gather_all(stars, out_star, state, root)


def _read_record(state: Path) -> dict:
    try:
        return json.loads((state / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _root_from(out_star: Path, root: Path) -> str:
    """The root of the gathered file's paths, from the file's folder (".." in the
    workflow), so that a copied or moved run folder keeps its record."""
    return os.path.relpath(os.path.abspath(root), os.path.abspath(out_star.parent))


def _write_record(
    state: Path, stars: Sequence[Path], count: int, columns: list[str], root: str
) -> None:
    from cryofac.fileio import atomic_write

    record = {"batches": [_signature(p) for p in stars], "particles": count, "columns": columns}
    # paths in the gathered file are relative to this folder (seen from the file's); a
    # record without it is from before (paths relative to particles/): gather again
    record["root"] = root
    atomic_write(state / RECORD, json.dumps(record) + "\n")


def _gather_all(stars: Sequence[Path], out_star: Path, state: Path, root: Path) -> int:
    from pipeline.io.particles import read_particles_star, write_particles_star

    tables, sources = [], []
    for path in stars:
        table = read_particles_star(path)
        if len(table):
            tables.append(table)
            sources.append(path.parent)
    (state / RECORD).unlink(missing_ok=True)
    if not tables:
        out_star.unlink(missing_ok=True)
        return 0
    merged = merge_tables(tables, sources, root)
    write_particles_star(out_star, merged)
    _write_record(
        state, stars, len(merged), list(merged.particles.columns), _root_from(out_star, root)
    )
    return len(merged)


def _optics_key(row: dict) -> tuple:
    return tuple(round(float(row[k]), 6) for k in OPTICS_KEYS if k in row)


def _optics_of(out_star: Path):
    """The optics table of a gathered STAR file, read from its head only."""
    import starfile

    head = []
    with open(out_star) as handle:
        for line in handle:
            if line.strip() == "data_particles":
                break
            head.append(line)
    with tempfile.TemporaryDirectory(dir=out_star.parent) as tmp:
        path = Path(tmp) / "optics.star"
        path.write_text("".join(head))
        blocks = starfile.read(path, always_dict=True)
    return blocks.get("optics")


def _loop_body(text: str, block: str) -> str:
    """The data rows of ``block``'s loop in STAR ``text`` (after its column names)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == block)
    i = start + 1
    while i < len(lines) and not lines[i].startswith("_rln"):
        i += 1
    while i < len(lines) and lines[i].startswith("_rln"):
        i += 1
    body = []
    for line in lines[i:]:
        if line.startswith("data_"):
            break
        if line.strip() and not line.startswith("#"):
            body.append(line)
    return "".join(body)


def _append(
    out_star: Path, new: Sequence[Path], record: dict, state: Path, root: Path
) -> int | None:
    """Append the rows of the ``new`` batches to ``out_star``; None when they do not fit
    (other columns, or an optics group not already in the file): then gather all."""
    from pipeline.io.particles import ParticleTable, read_particles_star, write_particles_star

    count = int(record.get("particles", 0))
    if not new:
        return count
    optics = _optics_of(out_star)
    if optics is None:
        return None
    groups = {_optics_key(r): int(r["rlnOpticsGroup"]) for r in optics.to_dict("records")}
    frames = []
    for path in new:
        table = read_particles_star(path)
        if not len(table):
            continue
        remap = {}
        for row in table.optics.to_dict("records"):
            if _optics_key(row) not in groups:
                return None  # a new optics group: the header changes
            remap[int(row["rlnOpticsGroup"])] = groups[_optics_key(row)]
        frames.append(_rows_for(table, path.parent, root, remap))
    columns = list(record.get("columns") or [])
    if frames:
        rows = pd.concat(frames, ignore_index=True)
        if list(rows.columns) != columns:
            return None
        # the rows exactly as a whole write would format them: write them alone, take
        # the loop's body, and append it (the particles loop is the file's last block)
        with tempfile.TemporaryDirectory(dir=out_star.parent) as tmp:
            part = Path(tmp) / "new.star"
            write_particles_star(part, ParticleTable(optics=optics, particles=rows))
            body = _loop_body(part.read_text(), "data_particles")
        with open(out_star, "a") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        count += len(rows)
    done = [Path(b[0]) for b in record["batches"]]
    _write_record(state, [*done, *new], count, columns, _root_from(out_star, root))
    return count


def snapshot(
    gathered_star: str | os.PathLike,
    n: int,
    out_star: str | os.PathLike,
    state_dir: str | os.PathLike | None = None,
    root: str | os.PathLike = ".",
) -> int:
    """Write the first ``n`` gathered particles to ``out_star`` (paths from ``root``)."""
    from pipeline.io.particles import ParticleTable, read_particles_star, write_particles_star

    gathered_star, out_star = Path(gathered_star), Path(out_star)
    state = Path(state_dir) if state_dir is not None else gathered_star.parent
    with gathered_lock(state, shared=True):
        table = read_particles_star(gathered_star)
    if len(table) < n:
        raise ValueError(f"{gathered_star}: {len(table)} particles, fewer than {n}")
    particles = table.particles.iloc[:n].copy()
    out_star.parent.mkdir(parents=True, exist_ok=True)
    for column in PATH_COLUMNS:
        if column in particles.columns:
            particles[column] = _rebase_paths(particles[column], gathered_star.parent, root)
    used = set(particles["rlnOpticsGroup"].astype(int))
    optics = table.optics[table.optics["rlnOpticsGroup"].astype(int).isin(used)]
    write_particles_star(out_star, ParticleTable(optics=optics, particles=particles))
    return n


def write_count(path: str | os.PathLike, count: int, batches: int) -> None:
    from workflows.tables import atomic_write_text

    atomic_write_text(path, json.dumps({"particles": count, "batches": batches}) + "\n")
