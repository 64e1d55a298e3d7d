"""Processing progress of a session's run folder as a small JSON-ready dict (pure).

Meant for ``GET /api/v1/sessions/ID`` (its ``processing`` member) and anything else
that wants the run's headline numbers without the per-movie table.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from portal.runs.folder import RunFolder, RunFolderError, run_cache


def _median(values: list[float]) -> float | None:
    return round(float(median(values)), 3) if values else None


def processing_summary(run_dir: str | None) -> dict[str, Any]:
    """Counts, rates (per hour), resolution (Å) and per-movie medians of a run folder.

    ``{}`` when the session has no run folder yet; ``{"state": "unreadable", "error": …}``
    when the folder exists but cannot be read (the message names the file).
    """
    if not run_dir:
        return {}
    try:
        run = run_cache.get(run_dir)
    except RunFolderError as exc:
        return {"state": "unreadable", "error": str(exc)}
    return summarize_run(run)


def summarize_run(run: RunFolder) -> dict[str, Any]:
    s = run.summary
    ok = [m for m in run.movies if m.ok]
    return {
        "state": s.state,
        "updated_at": s.updated_at.isoformat() if s.updated_at else None,
        "movies_seen": s.movies_seen,
        "movies_processed": s.movies_processed,
        "movies_failed": s.movies_failed,
        "backlog": s.backlog,
        "particles": s.particles,
        "batches_done": s.batches_done,
        "batches_total": s.batches_total,
        "acquisition_rate_per_h": s.acquisition_rate_per_h,
        "processing_rate_per_h": s.processing_rate_per_h,
        "keeping_up": s.keeping_up,
        "resolution_A": s.resolution_A,
        "b_factor": s.b_factor,
        "warnings": list(s.warnings),
        "median_total_motion_A": _median(
            [m.total_motion_A for m in ok if m.total_motion_A is not None]
        ),
        "median_defocus_A": _median([m.defocus_mean_A for m in ok if m.defocus_mean_A is not None]),
        "median_ctf_max_resolution_A": _median(
            [m.ctf_max_resolution_A for m in ok if m.ctf_max_resolution_A is not None]
        ),
        "median_particles_per_micrograph": _median(
            [float(m.n_particles) for m in ok if m.n_particles is not None]
        ),
    }
