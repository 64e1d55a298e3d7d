"""The acquisition's own metadata against the configuration: pixel size (Å), dose per
frame (e/Å²) and voltage (kV).

Sources, when present: ``RAW_DIR/acquisition.json`` (written by the microscope
software or the simulator) and the MRC headers of the movies (voxel size). A
configured value that differs from a source by more than ``tolerance`` (1 %) is a
:class:`MetadataMismatch` naming both values, unless the check is overridden.
EER movies are refused with a clear message (:class:`UnsupportedMovies`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryofac.errors import CryofacError

#: configuration key -> (acquisition.json key, unit)
CHECKED = {
    "pixel_size_A": "Å",
    "dose_per_frame_e_A2": "e/Å²",
    "voltage_kV": "kV",
}


class MetadataMismatch(CryofacError):
    """The configuration contradicts the acquisition's metadata."""


class UnsupportedMovies(CryofacError):
    """Movies in a format the pipeline cannot read (EER)."""


@dataclass(frozen=True)
class Source:
    """Values (config key -> number) and where they were read."""

    where: str
    values: dict[str, float]


def acquisition_json(raw_dir: Path) -> Source | None:
    """``RAW_DIR/acquisition.json``'s pixel size, dose per frame and voltage, if any."""
    path = raw_dir / "acquisition.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    values = {k: float(data[k]) for k in CHECKED if isinstance(data.get(k), int | float)}
    return Source(str(path), values) if values else None


def mrc_header(path: Path) -> Source | None:
    """Pixel size (Å) from an MRC movie's header; None when unset (0) or unreadable."""
    import mrcfile

    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            pixel = float(mrc.voxel_size.x)
    except (OSError, ValueError):
        return None
    if not pixel > 0:
        return None
    return Source(f"{path} (MRC header)", {"pixel_size_A": pixel})


def sources(raw_dir: Path, movies: Iterable[str], sample: int = 2) -> list[Source]:
    """acquisition.json and the headers of up to ``sample`` MRC movies (first, last)."""
    found = []
    meta = acquisition_json(raw_dir)
    if meta is not None:
        found.append(meta)
    mrcs = [m for m in movies if m.lower().endswith((".mrc", ".mrcs"))]
    for name in dict.fromkeys(mrcs[:1] + mrcs[-1:][: max(0, sample - 1)]):
        header = mrc_header(raw_dir / name)
        if header is not None:
            found.append(header)
    return found


def check(
    config: Mapping[str, float], found: Iterable[Source], tolerance: float = 0.01
) -> list[str]:
    """One line per configured value that differs from a source by more than ``tolerance``."""
    problems = []
    for source in found:
        for key, measured in source.values.items():
            if key not in config or measured == 0:
                continue
            given = float(config[key])
            if abs(given - measured) > tolerance * abs(measured):
                unit = CHECKED[key]
                problems.append(
                    f"{key} is {given:g} {unit} in the configuration but {measured:g} {unit} "
                    f"in {source.where}"
                )
    return problems


def refuse_mismatch(config: Mapping[str, float], raw_dir: Path, movies: list[str]) -> None:
    """Raise :class:`MetadataMismatch` (one line) when the metadata contradict ``config``."""
    problems = check(config, sources(raw_dir, movies))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MetadataMismatch(
            f"{problems[0]}{more}; fix the configuration, or run with "
            "--ignore-metadata-mismatch to process with the configured values"
        )


def refuse_eer(raw_dir: Path, movies: list[str]) -> None:
    """EER movies are not supported yet: one line naming how many and what to do."""
    eer = [m for m in movies if m.lower().endswith(".eer")]
    if eer:
        raise UnsupportedMovies(
            f"{os.path.join(raw_dir, eer[0])}: EER movies are not supported "
            f"({len(eer)} found); convert them to TIFF (e.g. relion_convert_to_tiff) "
            "or exclude them with movies.exclude: ['*.eer']"
        )
