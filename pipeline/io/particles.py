"""RELION 3.1 particle STAR files: ``data_optics`` + ``data_particles``.

A :class:`ParticleTable` holds two pandas DataFrames with RELION column names:
``optics`` (one row per optics group: voltage, Cs, amplitude contrast, image pixel
size and box size) and ``particles`` (one row per particle image:
``rlnImageName`` = ``N@stack.mrcs`` with N 1-based, coordinates in pixels of the
micrograph, per-particle CTF in Å/degrees, optional poses ``rlnAngleRot/Tilt/Psi``
in degrees and ``rlnOriginXAngst/YAngst`` in Å).

Reading validates the layout and says what is missing and where
(:class:`ParticleStarError`). Writing goes through ``starfile`` to a temporary
file that is renamed into place, so readers never see half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_path
from pipeline.io.star import StarError, read_star


class ParticleStarError(CryofacError):
    """A particles STAR file is missing, malformed, or lacks required columns."""


#: columns every optics group must have (RELION 3.1)
OPTICS_COLUMNS = (
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnAmplitudeContrast",
    "rlnSphericalAberration",
    "rlnVoltage",
    "rlnImagePixelSize",
    "rlnImageSize",
    "rlnImageDimensionality",
)

#: columns every particle row must have (CONTRACT.md: the image and its CTF; the optics
#: group too when there are several);
#: micrograph names and coordinates (LOCATION_COLUMNS) are used when present
PARTICLE_COLUMNS = (
    "rlnImageName",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
)

LOCATION_COLUMNS = ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY")
POSE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGIN_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst")


@dataclass
class ParticleTable:
    """Optics groups and particles of a RELION 3.1 particles STAR file."""

    optics: pd.DataFrame
    particles: pd.DataFrame

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def has_locations(self) -> bool:
        """True when every particle has a micrograph name and coordinates."""
        return all(c in self.particles.columns for c in LOCATION_COLUMNS)

    @property
    def has_poses(self) -> bool:
        return all(c in self.particles.columns for c in POSE_COLUMNS)

    def image_locations(self) -> tuple[np.ndarray, list[str]]:
        """Split ``rlnImageName`` into 0-based indices and stack paths."""
        indices, stacks = [], []
        for name in self.particles["rlnImageName"].astype(str):
            idx, _, stack = name.partition("@")
            if not stack or not idx.strip().isdigit() or int(idx) < 1:
                raise ParticleStarError(f"rlnImageName {name!r} is not of the form N@stack.mrcs")
            indices.append(int(idx) - 1)
            stacks.append(stack)
        return np.asarray(indices, dtype=np.int64), stacks

    def optics_for_particles(self) -> pd.DataFrame:
        """The optics row of every particle, aligned with ``particles`` (same index)."""
        merged = self.particles[["rlnOpticsGroup"]].merge(
            self.optics, on="rlnOpticsGroup", how="left", validate="many_to_one"
        )
        if merged["rlnImagePixelSize"].isna().any():
            missing = sorted(
                set(self.particles["rlnOpticsGroup"]) - set(self.optics["rlnOpticsGroup"])
            )
            raise ParticleStarError(
                f"particles refer to optics groups {missing} not in data_optics"
            )
        merged.index = self.particles.index
        return merged


def make_optics(
    pixel_size_A: float,
    box_px: int,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    micrograph_pixel_size_A: float | None = None,
    group: int = 1,
    name: str = "opticsGroup1",
) -> pd.DataFrame:
    """A one-row ``data_optics`` table (pixel size of the extracted images in Å)."""
    if pixel_size_A <= 0 or box_px <= 0:
        raise ParticleStarError(
            f"optics group {name}: pixel size ({pixel_size_A} Å) and box ({box_px} px) must be > 0"
        )
    return pd.DataFrame(
        {
            "rlnOpticsGroup": [int(group)],
            "rlnOpticsGroupName": [name],
            "rlnAmplitudeContrast": [float(amplitude_contrast)],
            "rlnSphericalAberration": [float(cs_mm)],
            "rlnVoltage": [float(voltage_kV)],
            "rlnImagePixelSize": [float(pixel_size_A)],
            "rlnMicrographOriginalPixelSize": [
                float(micrograph_pixel_size_A if micrograph_pixel_size_A else pixel_size_A)
            ],
            "rlnImageSize": [int(box_px)],
            "rlnImageDimensionality": [2],
        }
    )


def _check_columns(frame: pd.DataFrame, required: tuple[str, ...], where: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ParticleStarError(f"{where}: missing column(s) {', '.join(missing)}")


def validate(table: ParticleTable, where: str = "particles") -> None:
    """Raise :class:`ParticleStarError` if the table is not a usable RELION 3.1 layout."""
    _check_columns(table.optics, OPTICS_COLUMNS, f"{where}: data_optics")
    _check_columns(table.particles, PARTICLE_COLUMNS, f"{where}: data_particles")
    if "rlnOpticsGroup" not in table.particles.columns:  # optional with one optics group
        if len(table.optics) != 1:
            raise ParticleStarError(
                f"{where}: data_particles: missing column rlnOpticsGroup "
                f"(needed with {len(table.optics)} optics groups)"
            )
        table.particles["rlnOpticsGroup"] = int(table.optics["rlnOpticsGroup"].iloc[0])
    if table.optics["rlnOpticsGroup"].duplicated().any():
        raise ParticleStarError(f"{where}: data_optics has duplicate rlnOpticsGroup numbers")
    unknown = set(table.particles["rlnOpticsGroup"].astype(int)) - set(
        table.optics["rlnOpticsGroup"].astype(int)
    )
    if unknown:
        raise ParticleStarError(
            f"{where}: particles refer to optics group(s) {sorted(unknown)} not in data_optics"
        )
    if (table.particles["rlnDefocusU"] < table.particles["rlnDefocusV"] - 1e-3).any():
        raise ParticleStarError(f"{where}: rlnDefocusU < rlnDefocusV (RELION needs U ≥ V)")


def write_particles_star(path: str | os.PathLike, table: ParticleTable) -> Path:
    """Write ``table`` as a RELION 3.1 particles STAR file (atomic rename)."""
    import starfile

    path = Path(path)
    validate(table, str(path))
    with atomic_path(path) as tmp:
        starfile.write(
            {
                "optics": table.optics.reset_index(drop=True),
                "particles": table.particles.reset_index(drop=True),
            },
            tmp,
            overwrite=True,
            float_format="%.6f",
        )
        # RELION 3.1 writes "# version 30001" above each block; do the same
        text = Path(tmp).read_text()
        for block in ("data_optics", "data_particles"):
            text = text.replace(f"\n{block}\n", f"\n# version 30001\n\n{block}\n", 1)
        Path(tmp).write_text(text)
    return path


def read_particles_star(path: str | os.PathLike) -> ParticleTable:
    """Read a RELION 3.1 particles STAR file; raises :class:`ParticleStarError` when unusable."""
    path = Path(path)
    try:
        blocks = read_star(path)
    except StarError as exc:  # missing, unreadable or empty: the same message
        raise ParticleStarError(str(exc)) from None
    if "optics" not in blocks:
        raise ParticleStarError(
            f"{path}: no data_optics block (RELION 3.0 or older layout; re-save in RELION 3.1+)"
        )
    if "particles" not in blocks:
        raise ParticleStarError(f"{path}: no data_particles block")
    optics, particles = blocks["optics"], blocks["particles"]
    if not isinstance(optics, pd.DataFrame) or not isinstance(particles, pd.DataFrame):
        raise ParticleStarError(f"{path}: data_optics/data_particles must be loops")
    table = ParticleTable(optics=optics, particles=particles)
    validate(table, str(path))
    return table
