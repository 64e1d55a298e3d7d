"""The run-folder contract between ``workflows/`` (writer) and ``portal/`` (reader).

One definition of the names both sides must agree on: the ``summary.json`` schema
tag and states, the keys of ``summary["outputs"]``, and the columns of ``movies.tsv``.
Standard library only, so either part can import it without pulling in the other.
"""

from __future__ import annotations

SUMMARY_SCHEMA = "cryofac-run-summary/1"
RUN_STATES = ("running", "idle", "complete", "failed")
#: Output keys of ``summary["outputs"]``, in the order they are offered for download.
OUTPUT_KEYS = (
    "map",
    "half1",
    "half2",
    "mask",
    "fsc_star",
    "fsc_png",
    "slices_png",
    "particles_star",
    "particles_cs",
    "classes2d",
)
#: Columns of ``movies.tsv`` (tab-separated, header row), in order.
MOVIE_COLUMNS = (
    "movie",
    "batch",
    "status",
    "total_motion_A",
    "early_motion_A",
    "late_motion_A",
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "astigmatism_A",
    "ctf_max_resolution_A",
    "ctf_fom",
    "n_particles",
    "processed_at",
    #: why a movie failed (step: message), or why an ok movie has no particles; "" otherwise
    "reason",
)

#: A run's reconstructions: ``reconstruct/p<N>/`` (N: the particles it used), the
#: folder ``cryofac reconstruct --out`` writes.
RECONSTRUCTION_DIR = "reconstruct"
#: Written by the running reconstruction (pipeline/reconstruction/progress.py), rewritten
#: atomically at most once a second and at every stage change; its keys:
RECONSTRUCTION_PROGRESS = "progress.json"
PROGRESS_KEYS = ("stage", "stage_fraction", "fraction", "message", "elapsed_s", "eta_s", "updated")
#: Its stages in order (``start`` before the first, ``done`` after the last).
RECONSTRUCTION_STAGES = ("start", "load", "class2d", "abinitio", "refine", "postprocess", "done")
#: Written last, when the reconstruction finished; ``warnings`` (list of plain-language
#: strings) says when the map may be wrong although its half-maps agree.
RECONSTRUCTION_RESULT = "result.json"
