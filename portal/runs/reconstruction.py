"""The reconstruction of a run folder as the run page shows it: the running one's stage,
fraction and ETA (``reconstruct/p<N>/progress.json``), and the latest finished one's
warnings that the map may be wrong (``result.json`` ``warnings``). Pure; no Flask.

Both files are written by ``cryofac reconstruct`` (names in :mod:`cryofac.run_folder`).
A missing, half-written or foreign file is no error here: the page then shows no
progress, or only the warnings the run summary carries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryofac.run_folder import (
    RECONSTRUCTION_DIR,
    RECONSTRUCTION_PROGRESS,
    RECONSTRUCTION_RESULT,
)
from portal.runs.folder import RunFolderError, parse_iso, safe_join

#: The stages (:data:`cryofac.run_folder.RECONSTRUCTION_STAGES`) in plain words.
STAGE_NAMES = {
    "start": "starting",
    "load": "reading the particles",
    "class2d": "2D classification",
    "abinitio": "ab-initio model",
    "refine": "3D refinement",
    "postprocess": "sharpening and resolution (FSC)",
    "done": "finished",
}
#: The largest progress.json or result.json read (bytes); a bigger one is ignored.
MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class ReconstructionProgress:
    """One running reconstruction: fractions 0–1, seconds, ``updated_at`` aware UTC."""

    folder: str  # relative to the run folder, e.g. ``reconstruct/p3000``
    particles: int
    stage: str
    stage_fraction: float
    fraction: float
    message: str
    elapsed_s: float | None
    eta_s: float | None
    updated_at: datetime | None

    @property
    def stage_text(self) -> str:
        return STAGE_NAMES.get(self.stage, self.stage)

    def describe(self, now: datetime, stall_after_s: float = 900.0) -> str:
        """E.g. ``3D refinement (3,000 particles): 40 % of this stage, 61 % in all,
        about 12 min left``; says so when it has not moved for ``stall_after_s``."""
        text = (
            f"{self.stage_text[:1].upper()}{self.stage_text[1:]} ({self.particles:,} particles): "
            f"{100 * self.stage_fraction:.0f} % of this stage, {100 * self.fraction:.0f} % in all"
        )
        quiet_s = (now - self.updated_at).total_seconds() if self.updated_at else None
        if quiet_s is not None and quiet_s > stall_after_s:
            return f"{text}; no progress for {quiet_s / 60:,.0f} min"
        if self.eta_s is not None:
            text += f", about {_duration(self.eta_s)} left"
        return text


def _duration(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"


def _read_json(path: Path | None) -> dict | None:
    if path is None or not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # being replaced, or not ours
    return data if isinstance(data, dict) else None


def _reconstructions(run_dir: Path) -> list[tuple[int, Path]]:
    """(particles, folder) of every ``reconstruct/p<N>/`` inside the run folder."""
    root = safe_join(run_dir, RECONSTRUCTION_DIR)
    if root is None or not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        name = entry.name
        if name[:1] == "p" and name[1:].isdigit() and len(name) < 12:
            folder = safe_join(run_dir, f"{RECONSTRUCTION_DIR}/{name}")
            if folder is not None and folder.is_dir():
                found.append((int(name[1:]), folder))
    return found


def _fraction(data: dict, key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))


def _seconds(data: dict, key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def running_reconstruction(run_dir: str | Path) -> ReconstructionProgress | None:
    """The reconstruction that is running (the most recently updated ``progress.json``
    whose stage is not ``done`` and beside which no ``result.json`` is yet), or None."""
    run_dir = Path(run_dir)
    newest: tuple[float, int, Path] | None = None
    for particles, folder in _reconstructions(run_dir):
        progress = folder / RECONSTRUCTION_PROGRESS
        if (folder / RECONSTRUCTION_RESULT).exists() or not progress.is_file():
            continue
        mtime = progress.stat().st_mtime
        if newest is None or mtime > newest[0]:
            newest = (mtime, particles, folder)
    if newest is None:
        return None
    _, particles, folder = newest
    data = _read_json(folder / RECONSTRUCTION_PROGRESS)
    if data is None or data.get("stage") == "done":
        return None
    stage = str(data.get("stage", "start"))[:40]
    try:
        updated = parse_iso(data.get("updated"), "progress.json")
    except RunFolderError:
        updated = None
    return ReconstructionProgress(
        folder=f"{RECONSTRUCTION_DIR}/{folder.name}",
        particles=particles,
        stage=stage,
        stage_fraction=_fraction(data, "stage_fraction"),
        fraction=_fraction(data, "fraction"),
        message=str(data.get("message") or "")[:200],
        elapsed_s=_seconds(data, "elapsed_s"),
        eta_s=_seconds(data, "eta_s"),
        updated_at=updated,
    )


def result_warnings(run_dir: str | Path) -> list[str]:
    """``warnings`` of the latest finished reconstruction's ``result.json`` (the one with
    the most particles, as the workflow's summary picks it), as plain strings."""
    finished = [
        (particles, folder)
        for particles, folder in _reconstructions(Path(run_dir))
        if (folder / RECONSTRUCTION_RESULT).is_file()
    ]
    if not finished:
        return []
    _, folder = max(finished, key=lambda item: item[0])
    data = _read_json(folder / RECONSTRUCTION_RESULT) or {}
    warnings = data.get("warnings")
    if not isinstance(warnings, list):
        return []
    return [str(w)[:2000] for w in warnings[:20] if str(w).strip()]
