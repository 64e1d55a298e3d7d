"""Live processing runs: read a run folder written by the workflow, and plot it.

Pure modules (no Flask): :mod:`portal.runs.folder` turns ``summary.json`` and
``movies.tsv`` into dataclasses; :mod:`portal.runs.plots` renders SVG plots with a
cache keyed by file modification time; :mod:`portal.runs.files` names the downloadable
outputs. Who may see a run is decided by ``portal.domain.permissions.visible_session``
(members and staff; everyone else gets 404).
"""

from portal.runs.folder import (
    OUTPUT_KEYS,
    SUMMARY_SCHEMA,
    MovieStats,
    RunFolder,
    RunFolderError,
    RunSummary,
    read_movies,
    read_run,
    read_summary,
)

__all__ = [
    "OUTPUT_KEYS",
    "SUMMARY_SCHEMA",
    "MovieStats",
    "RunFolder",
    "RunFolderError",
    "RunSummary",
    "read_movies",
    "read_run",
    "read_summary",
]
