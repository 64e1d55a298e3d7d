"""The downloadable files of a run: public names, paths and kinds (pure, no Flask).

Public names are stable and short (``map.mrc``, ``half1.mrc``, ``fsc.star``,
``particles.star``, ``particles.cs``…) whatever the workflow's folder layout is, so
scripts can fetch ``/api/v1/sessions/ID/files/map.mrc`` without knowing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from portal.runs.folder import OUTPUT_KEYS, RunFolder

#: output key -> (public base name, what it is)
OUTPUT_NAMES: dict[str, tuple[str, str]] = {
    "map": ("map", "Final map (sharpened)"),
    "half1": ("half1", "Half-map 1 (unfiltered)"),
    "half2": ("half2", "Half-map 2 (unfiltered)"),
    "mask": ("mask", "Solvent mask"),
    "fsc_star": ("fsc", "FSC curve (RELION STAR)"),
    "fsc_png": ("fsc", "FSC plot"),
    "slices_png": ("slices", "Central slices"),
    "particles_star": ("particles", "Particles with poses (RELION STAR)"),
    "particles_cs": ("particles", "Particles with poses (cryoSPARC .cs)"),
    "classes2d": ("classes2d", "2D class averages"),
}

#: Names produced by the portal itself rather than found in the run folder.
ENVIRONMENT_NAME = "environment.json"
MANIFEST_NAME = "manifest.json"
SHA256SUM_NAME = "MANIFEST.sha256"


@dataclass(frozen=True)
class RunFile:
    """One downloadable output: public ``name``, absolute ``path``, output ``key``, label."""

    name: str
    path: Path
    key: str
    label: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def _suffix(path: Path) -> str:
    name = path.name
    for double in (".mrc.gz", ".star.gz", ".tar.gz"):
        if name.endswith(double):
            return double
    return path.suffix


def run_files(run: RunFolder) -> list[RunFile]:
    """Existing output files of ``run`` in contract order, with unique public names."""
    files: list[RunFile] = []
    used: set[str] = set()
    keys = [k for k in OUTPUT_KEYS] + [k for k in run.summary.outputs if k not in OUTPUT_KEYS]
    for key in keys:
        path = run.output_path(key)
        if path is None or not path.is_file():
            continue
        base, label = OUTPUT_NAMES.get(key, (key, key.replace("_", " ")))
        name = f"{base}{_suffix(path)}"
        if name in used or name in (ENVIRONMENT_NAME, MANIFEST_NAME, SHA256SUM_NAME):
            name = f"{key}{_suffix(path)}"
        used.add(name)
        files.append(RunFile(name=name, path=path, key=key, label=label))
    return files


def find_file(run: RunFolder, name: str) -> RunFile | None:
    """The output called ``name`` (exact match), or None."""
    for item in run_files(run):
        if item.name == name:
            return item
    return None


def media_type(name: str) -> str:
    """A Content-Type for a public file name."""
    lower = name.lower()
    if lower.endswith(".png"):
        return "image/png"
    if lower.endswith(".json"):
        return "application/json"
    if lower.endswith((".star", ".sha256", ".txt", ".log")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"
