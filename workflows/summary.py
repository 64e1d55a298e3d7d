"""The run folder's machine-readable progress: ``summary.json`` and ``movies.tsv``.

Contract with the portal (reader): ``OUT/summary.json`` (schema
``cryofac-run-summary/1``, written atomically) and ``OUT/movies.tsv``, one row
per movie that has been through a batch, with the columns in
:data:`MOVIE_COLUMNS`. Per-batch tables (``batches/<batch>/movies.tsv``) are
written by the workflow when a batch finishes; this module joins them, so a
refresh costs one small file per batch, never re-reading micrographs.

No Snakemake import: ``cryofac process`` refreshes the summary while Snakemake
runs, and the Snakefile's ``onsuccess``/``onerror`` handlers call it too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryofac.run_folder import MOVIE_COLUMNS
from cryofac.run_folder import RUN_STATES as STATES
from cryofac.run_folder import SUMMARY_SCHEMA as SCHEMA
from workflows import batching, slurm_jobs
from workflows.tables import atomic_write_text, format_tsv, read_tsv

#: Output key (cryofac.run_folder.OUTPUT_KEYS) -> file name in a reconstruction folder.
OUTPUT_FILES = {
    "map": "map.mrc",
    "half1": "half1.mrc",
    "half2": "half2.mrc",
    "mask": "mask.mrc",
    "fsc_star": "fsc.star",
    "fsc_png": "fsc.png",
    "slices_png": "slices.png",
    "particles_star": "particles.star",
    "particles_cs": "particles.cs",
    "classes2d": "class_averages.mrcs",
}


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (``2026-11-25T04:00:00Z``), or None."""
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _star_table(path: Path, column: str):
    """The first block of a STAR file that has ``column`` (pandas DataFrame) or None."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    import starfile

    for table in starfile.read(path, always_dict=True).values():
        if hasattr(table, "columns") and column in table.columns:
            return table
    return None


def _rows_by_stem(table, column: str) -> dict[str, dict]:
    if table is None:
        return {}
    return {batching.stem(str(r[column])): r for r in table.to_dict("records")}


def _status(path: Path) -> dict[str, tuple[str, str]]:
    """input stem -> (status, message) from a step's status.tsv."""
    return {
        batching.stem(r["input"]): (r["status"], r.get("message") or "") for r in read_tsv(path)
    }


def batch_table(batch_dir: str | os.PathLike, processed_at: float | None = None) -> list[dict]:
    """Per-movie statistics of one finished batch folder (see :data:`MOVIE_COLUMNS`).

    A movie is ``failed`` when motion correction, CTF estimation or picking
    failed on it; a micrograph rejected for a poor CTF fit is ``ok`` with no
    particles. Motion is from ``corrected_micrographs.star`` (Å), CTF from
    ``micrographs_ctf.star``, particle counts from the batch's ``particles.star``.
    """
    batch_dir = Path(batch_dir)
    batch = batch_dir.name
    movies = [m for m in (batch_dir / batching.MANIFEST).read_text().splitlines() if m.strip()]
    motion = _rows_by_stem(
        _star_table(batch_dir / "motioncorr" / "corrected_micrographs.star", "rlnMicrographName"),
        "rlnMicrographName",
    )
    ctf = _rows_by_stem(
        _star_table(batch_dir / "ctf" / "micrographs_ctf.star", "rlnMicrographName"),
        "rlnMicrographName",
    )
    particles = _star_table(batch_dir / "extract" / "particles.star", "rlnMicrographName")
    counts: dict[str, int] = {}
    if particles is not None:
        for name, n in particles["rlnMicrographName"].astype(str).value_counts().items():
            counts[batching.stem(name)] = int(n)
    steps = {s: _status(batch_dir / s / "status.tsv") for s in ("motioncorr", "ctf", "pick")}
    when = iso(processed_at if processed_at is not None else dt.datetime.now().timestamp())
    rows = []
    for movie in movies:
        stem = batching.stem(movie)
        failed, reason = movie_outcome(steps, stem)
        m, c = motion.get(stem, {}), ctf.get(stem, {})
        du, dv = c.get("rlnDefocusU"), c.get("rlnDefocusV")
        rows.append(
            {
                "movie": movie,
                "batch": batch,
                "status": "failed" if failed else "ok",
                "total_motion_A": m.get("rlnAccumMotionTotal"),
                "early_motion_A": m.get("rlnAccumMotionEarly"),
                "late_motion_A": m.get("rlnAccumMotionLate"),
                "defocus_u_A": du,
                "defocus_v_A": dv,
                "defocus_angle_deg": c.get("rlnDefocusAngle"),
                "astigmatism_A": (float(du) - float(dv)) if du is not None else None,
                "ctf_max_resolution_A": c.get("rlnCtfMaxResolution"),
                "ctf_fom": c.get("rlnCtfFigureOfMerit"),
                "n_particles": 0 if failed else counts.get(stem, 0),
                "processed_at": when,
                "reason": reason,
            }
        )
    return rows


def movie_outcome(
    steps: Mapping[str, Mapping[str, tuple[str, str]]], stem: str
) -> tuple[bool, str]:
    """(failed, reason) of one movie from the steps' status tables, in step order.

    A movie is absent from the status of the steps after the one it failed in. The
    reason names the step and its message (``motioncorr: gain ... does not match``);
    a micrograph rejected for its CTF fit is not failed but says why it has no particles.
    """
    motion_state, motion_message = steps["motioncorr"].get(stem, ("failed", "no result"))
    if motion_state != "ok":
        return True, f"motioncorr: {motion_message or 'no output written'}"
    ctf_state, ctf_message = steps["ctf"].get(stem, ("failed", "no result"))
    if ctf_state == "failed":
        return True, f"ctf: {ctf_message or 'no output written'}"
    if ctf_state != "ok":
        return False, f"ctf {ctf_state}: {ctf_message}"
    pick_state, pick_message = steps["pick"].get(stem, ("failed", "no result"))
    if pick_state == "failed":
        return True, f"pick: {pick_message or 'no output written'}"
    return False, ""


def write_batch_table(batch_dir: str | os.PathLike, path: str | os.PathLike) -> list[dict]:
    rows = batch_table(batch_dir)
    atomic_write_text(path, format_tsv(rows, MOVIE_COLUMNS))
    return rows


def latest_reconstruction(out_dir: Path) -> Path | None:
    """The finished reconstruction with the most particles (``reconstruct/p<N>/``)."""
    root = out_dir / "reconstruct"
    best: tuple[int, Path] | None = None
    if root.is_dir():
        for entry in root.iterdir():
            name = entry.name
            if name[:1] == "p" and name[1:].isdigit() and (entry / "result.json").exists():
                n = int(name[1:])
                if best is None or n > best[0]:
                    best = (n, entry)
    return best[1] if best else None


def latest_log(out_dir: Path) -> str | None:
    logs = sorted((out_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    return str(logs[-1].relative_to(out_dir)) if logs else None


_EPU_TIME = re.compile(r"_(\d{8})_(\d{6})(?:_fractions|_EER)?\.[A-Za-z]+$")


def acquisition_times(scan: batching.MovieScan) -> dict[str, float]:
    """When each movie was acquired (seconds since the epoch), from its metadata.

    EPU names carry the exposure's time (``..._<YYYYMMDD>_<HHMMSS>_fractions.tiff``,
    microscope local time); when every eligible movie has one, those times are used.
    Otherwise the files' modification times (which a plain copy resets).
    """
    times: dict[str, float] = {}
    for name in scan.eligible:
        match = _EPU_TIME.search(name)
        if match is None:
            return dict(scan.mtimes)
        try:
            moment = dt.datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S")
        except ValueError:
            return dict(scan.mtimes)
        times[name] = moment.timestamp()
    return times


#: the window (s) over which "keeping up" compares the recent acquisition and processing
PACE_WINDOW_S = 1800.0


def recent_pace(
    landed: Mapping[str, float] | list[float],
    processed: list[float],
    now: float,
    window_s: float = PACE_WINDOW_S,
) -> tuple[float, float] | None:
    """(movies landed per hour, movies processed per hour) over the last ``window_s``
    seconds, both on this machine's clock (landing: the files' modification times;
    processing: ``processed_at``); None in the run's first five minutes (too early to
    tell a rate from a batch boundary)."""
    landed_times = list(landed.values()) if isinstance(landed, Mapping) else list(landed)
    if not landed_times:
        return None
    start = max(now - window_s, min(landed_times))
    span = now - start
    if span < 300.0:
        return None
    acquired = sum(start <= t <= now for t in landed_times)
    done = sum(start <= t <= now for t in processed)
    return round(acquired * 3600.0 / span, 2), round(done * 3600.0 / span, 2)


def keeping_up(backlog: int, batch_size: int, pace: tuple[float, float] | None = None) -> bool:
    """Whether processing keeps pace with the acquisition, from the backlog and the rates.

    More than two batches' worth of movies waiting is falling behind, whatever the
    rates; at most one batch (the one filling) is keeping up. In between, the recent
    rates decide (``pace``: :func:`recent_pace`): processing must reach 90 % of the
    acquisition rate, else the backlog is growing.
    """
    batch = max(1, batch_size)
    if backlog > 2 * batch:
        return False
    if backlog <= batch or pace is None:
        return True
    acquired_per_h, processed_per_h = pace
    return processed_per_h >= 0.9 * acquired_per_h


def _rate_per_h(count: int, first: float | None, last: float | None) -> float | None:
    if count < 2 or first is None or last is None or last <= first:
        return None
    return round((count - 1) * 3600.0 / (last - first), 2)


def write_summary(
    out_dir: str | os.PathLike,
    raw_dir: str | os.PathLike,
    state: str,
    scan: batching.MovieScan | None = None,
    now: float | None = None,
    batches_planned: int | None = None,
) -> dict:
    """Join the batch tables into ``movies.tsv`` and write ``summary.json``; return it.

    ``scan`` is the latest look at ``raw_dir`` (movies seen); without it the
    folder is scanned with the default patterns and no quiet period.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    out_dir = Path(out_dir)
    now = dt.datetime.now().timestamp() if now is None else now
    if scan is None:
        scan = batching.scan_movies(raw_dir) if os.path.isdir(raw_dir) else None
    manifests = batching.read_manifests(out_dir)
    rows: list[dict] = []
    batches_done = 0
    for batch in manifests:
        table = read_tsv(out_dir / batching.BATCHES_DIR / batch / "movies.tsv")
        if table:
            batches_done += 1
            rows.extend(table)
    atomic_write_text(out_dir / "movies.tsv", format_tsv(rows, MOVIE_COLUMNS))

    failed = sum(1 for r in rows if r["status"] == "failed")
    particles = sum(int(r["n_particles"] or 0) for r in rows)
    seen = len(scan.eligible) + len(scan.recent) if scan else len(rows)
    times = [
        dt.datetime.fromisoformat(r["processed_at"].replace("Z", "+00:00")).timestamp()
        for r in rows
        if r.get("processed_at")
    ]
    acquired = acquisition_times(scan) if scan else {}
    first_movie = min(acquired.values(), default=None)
    last_movie = max(acquired.values(), default=None)
    done = len(rows)
    backlog = max(0, seen - done)
    batch_size = max((len(m) for m in manifests.values()), default=0)
    # processing rate: movies through the pipeline per hour of acquisition so far (from
    # the first movie's arrival on disk to the last batch's end), not within one batch
    arrived = min(scan.mtimes.values(), default=None) if scan else None
    processing_rate = None
    if times and arrived is not None and max(times) > arrived:
        processing_rate = round(done * 3600.0 / (max(times) - arrived), 2)

    pace = recent_pace(scan.mtimes, times, now) if scan else None

    outputs: dict[str, str | None] = dict.fromkeys(OUTPUT_FILES)
    resolution = b_factor = None
    warnings: list[str] = []
    recon = latest_reconstruction(out_dir)
    if recon is not None:
        for key, name in OUTPUT_FILES.items():
            if (recon / name).exists():
                outputs[key] = str((recon / name).relative_to(out_dir))
        try:
            result = json.loads((recon / "result.json").read_text())
        except (OSError, ValueError):
            result = {}
        resolution = result.get("resolution_A")
        b_factor = result.get("b_factor", result.get("b_factor_A2"))
        warnings = [str(w) for w in result.get("warnings", [])]
    summary = {
        "schema": SCHEMA,
        "updated_at": iso(now),
        "state": state,
        "raw_dir": str(raw_dir),
        "movies_seen": seen,
        "movies_processed": len(rows) - failed,
        "movies_failed": failed,
        "particles": particles,
        "batches_done": batches_done,
        "batches_total": max(len(manifests), batches_planned or 0),
        "first_movie_at": iso(first_movie),
        "last_movie_at": iso(last_movie),
        "acquisition_rate_per_h": _rate_per_h(len(acquired), first_movie, last_movie),
        "processing_rate_per_h": processing_rate,
        "backlog": backlog,
        "recent_acquisition_per_h": pace[0] if pace else None,
        "recent_processing_per_h": pace[1] if pace else None,
        "keeping_up": keeping_up(backlog, batch_size, pace) if seen else None,
        "resolution_A": resolution,
        "b_factor": b_factor,
        "warnings": warnings,
        "outputs": outputs,
        "per_movie": "movies.tsv",
        "thumbnails": "thumbnails/",
        "log": latest_log(out_dir),
    }
    cluster = slurm_jobs.cluster_section(out_dir)
    if cluster is not None:  # SLURM jobs of the run (workflows/slurm_jobs.py)
        summary["cluster"] = cluster
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
