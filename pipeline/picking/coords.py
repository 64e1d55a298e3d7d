"""Coordinate STAR files (``<stem>_autopick.star``) and micrograph CTF tables.

Coordinates: ``rlnCoordinateX`` (column) and ``rlnCoordinateY`` (row) in pixels of the
micrograph as stored, ``rlnAutopickFigureOfMerit``. The CTF table is the
``micrographs_ctf.star`` of ``cryofac ctf`` (``rlnMicrographName``, ``rlnDefocusU/V`` in Å,
``rlnDefocusAngle`` in degrees, ...); voltage, Cs and amplitude contrast come from an optics
block when the file has one, otherwise from the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_path
from pipeline.ctf_model import CTFParams


class CoordinatesError(CryofacError):
    """A coordinate or micrograph CTF STAR file is missing or malformed."""


def coordinate_path(out_dir: str | os.PathLike, micrograph: str | os.PathLike) -> Path:
    """``OUT/<stem>_autopick.star`` for a micrograph path."""
    return Path(out_dir) / f"{Path(micrograph).stem}_autopick.star"


def _write_star(path: Path, blocks: dict[str, pd.DataFrame]) -> Path:
    import starfile

    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, overwrite=True, float_format="%.6f")
    return path


def _read_star(path: Path, what: str) -> dict:
    """Every block of a STAR file; :class:`CoordinatesError` naming ``what`` if it is
    missing or unreadable."""
    import starfile

    if not path.exists():
        raise CoordinatesError(f"{path}: {what} not found")
    try:
        return starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises assorted parser errors
        raise CoordinatesError(
            f"{path}: not a readable STAR file ({exc})".splitlines()[0]
        ) from None


def write_coordinates(path: str | os.PathLike, coords_px: np.ndarray, fom: np.ndarray) -> Path:
    """Write picks as a RELION coordinate STAR file (atomic)."""
    coords = np.asarray(coords_px, dtype=np.float64).reshape(-1, 2)
    frame = pd.DataFrame(
        {
            "rlnCoordinateX": coords[:, 0],
            "rlnCoordinateY": coords[:, 1],
            "rlnAutopickFigureOfMerit": np.asarray(fom, dtype=np.float64).reshape(-1),
        }
    )
    return _write_star(Path(path), {"": frame})


def read_coordinates(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(coords (n, 2) [x, y] in pixels, figure of merit (n,)) from a coordinate STAR file."""

    path = Path(path)
    blocks = _read_star(path, "coordinate file")
    frames = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
    frame = next((f for f in frames if "rlnCoordinateX" in f.columns), None)
    if frame is None:
        if not frames or all(len(f.columns) == 0 for f in frames):
            return np.zeros((0, 2)), np.zeros(0)
        raise CoordinatesError(f"{path}: no rlnCoordinateX/rlnCoordinateY columns")
    if "rlnCoordinateY" not in frame.columns:
        raise CoordinatesError(f"{path}: no rlnCoordinateY column")
    coords = frame[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(np.float64)
    if "rlnAutopickFigureOfMerit" in frame.columns:
        fom = frame["rlnAutopickFigureOfMerit"].to_numpy(np.float64)
    else:
        fom = np.zeros(len(frame))
    return coords, fom


def write_coordinate_index(path: str | os.PathLike, pairs: list[tuple[str, str]]) -> Path:
    """``autopick.star`` listing (rlnMicrographName, rlnMicrographCoordinates) as RELION 4 does."""
    frame = pd.DataFrame(pairs, columns=["rlnMicrographName", "rlnMicrographCoordinates"])
    return _write_star(Path(path), {"coordinate_files": frame})


@dataclass
class MicrographCTF:
    """One row of a micrograph CTF table."""

    name: str
    ctf: CTFParams
    max_resolution_A: float | None = None
    figure_of_merit: float | None = None


def read_micrograph_ctfs(
    path: str | os.PathLike,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> dict[str, MicrographCTF]:
    """Micrograph CTFs keyed by ``rlnMicrographName`` (also reachable via :func:`find_ctf`)."""

    path = Path(path)
    blocks = _read_star(path, "CTF STAR file")
    table = next(
        (
            b
            for b in blocks.values()
            if isinstance(b, pd.DataFrame) and "rlnMicrographName" in b.columns
        ),
        None,
    )
    if table is None:
        raise CoordinatesError(f"{path}: no table with rlnMicrographName")
    missing = [c for c in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle") if c not in table]
    if missing:
        raise CoordinatesError(f"{path}: missing column(s) {', '.join(missing)}")
    optics = blocks.get("optics")
    optics_by_group: dict[int, tuple[float, float, float]] = {}
    if isinstance(optics, pd.DataFrame) and "rlnOpticsGroup" in optics.columns:
        for _, row in optics.iterrows():
            optics_by_group[int(row["rlnOpticsGroup"])] = (
                float(row.get("rlnVoltage", voltage_kV)),
                float(row.get("rlnSphericalAberration", cs_mm)),
                float(row.get("rlnAmplitudeContrast", amplitude_contrast)),
            )
    result: dict[str, MicrographCTF] = {}
    for _, row in table.iterrows():
        kv, cs, ac = optics_by_group.get(
            int(row.get("rlnOpticsGroup", 1)), (voltage_kV, cs_mm, amplitude_contrast)
        )
        ctf = CTFParams(
            float(row["rlnDefocusU"]),
            float(row["rlnDefocusV"]),
            float(row["rlnDefocusAngle"]),
            voltage_kV=kv,
            cs_mm=cs,
            amplitude_contrast=ac,
            phase_shift_deg=float(row.get("rlnPhaseShift", 0.0)),
        ).normalised()
        name = str(row["rlnMicrographName"])
        result[name] = MicrographCTF(
            name,
            ctf,
            float(row["rlnCtfMaxResolution"]) if "rlnCtfMaxResolution" in row else None,
            float(row["rlnCtfFigureOfMerit"]) if "rlnCtfFigureOfMerit" in row else None,
        )
    return result


def find_ctf(ctfs: dict[str, MicrographCTF], micrograph: str | os.PathLike) -> MicrographCTF | None:
    """The CTF row for ``micrograph``: same path, else same file name, else same stem."""
    text = str(micrograph)
    if text in ctfs:
        return ctfs[text]
    name, stem = Path(text).name, Path(text).stem
    for key, value in ctfs.items():
        if Path(key).name == name:
            return value
    for key, value in ctfs.items():
        if Path(key).stem == stem:
            return value
    return None
