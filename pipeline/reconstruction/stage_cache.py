"""Keys of the reconstruction's resumable stages: a stage result is reused only when it
was made from the same particles, with the same options, by the same code.

``cryofac reconstruct`` resumes a folder stage by stage (``class2d.npz``,
``abinitio.mrc``, ``refine.npz`` + half-maps). Each stage's key is a SHA-256 of the
previous stage's key, the stage's own options and the code version, the first one
also of the particles STAR file's content (and of every stack it names, by size). ``OUT/stages.json`` records the keys the files were made with; a
stage whose key differs is removed, with every stage after it, before the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryofac.fileio import atomic_write

#: The stages in order, with the files each one owns in the output folder.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "class2d": ("class2d.npz", "class_averages.mrcs"),
    "abinitio": ("abinitio.mrc", "abinitio.json"),
    "refine": ("refine.npz", "half1.mrc", "half2.mrc"),
}
RECORD = "stages.json"


def code_version() -> str:
    """SHA-256 (16 hex digits) of the reconstruction package's source files."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def particles_digest(star: str | os.PathLike, stacks: Sequence[str | os.PathLike] = ()) -> str:
    """SHA-256 of the particles STAR file (without ``#`` comment lines, which carry the
    time of writing) and of each stack's name and size in bytes."""
    digest = hashlib.sha256()
    for line in Path(star).read_bytes().splitlines(keepends=True):
        if not line.startswith(b"#"):
            digest.update(line)
    for stack in sorted({str(s) for s in stacks}):
        try:
            size = os.stat(stack).st_size
        except OSError:
            size = -1
        digest.update(f"{os.path.basename(stack)}:{size}".encode())
    return digest.hexdigest()


def stage_keys(particles: str, options: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Chained key of each stage: ``options[stage]`` are the options it depends on."""
    keys: dict[str, str] = {}
    previous = f"{particles}:{code_version()}"
    for stage in STAGE_FILES:
        text = json.dumps(
            {"previous": previous, "options": options.get(stage, {})},
            sort_keys=True,
            default=str,
        )
        previous = hashlib.sha256(text.encode()).hexdigest()
        keys[stage] = previous
    return keys


def prepare(out: str | os.PathLike, keys: Mapping[str, str]) -> list[str]:
    """Remove the stage files not made with ``keys``; record ``keys``. Returns removed stages.

    From the first stage whose recorded key differs (or is unknown), that stage and
    every later one are removed, so nothing made from other inputs is reused.
    """
    out = Path(out)
    try:
        recorded = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        recorded = {}
    removed: list[str] = []
    stale = False
    for stage, files in STAGE_FILES.items():
        stale = stale or recorded.get(stage) != keys.get(stage)
        if stale:
            present = [out / name for name in files if (out / name).exists()]
            for path in present:
                path.unlink()
            if present:
                removed.append(stage)
    atomic_write(out / RECORD, json.dumps(dict(keys), indent=2, sort_keys=True) + "\n")
    return removed
