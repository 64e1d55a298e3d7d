"""cryoSPARC ``.cs`` particle datasets (cryosparc-tools ``Dataset``), to and from RELION tables.

Field conventions (as written by cryoSPARC's own extraction and read by its
"Import Particle Stack"):

- Paths: ``blob/path`` and ``location/micrograph_path`` are copied from the STAR
  table (``rlnImageName``'s stack, ``rlnMicrographName``), so both are relative to the
  same folder: the run folder in the workflow's files, as cryoSPARC's are relative to
  its project directory (``J42/extract/x_particles.mrc``; cryosparc-tools'
  ``download_mrc(project, path)`` takes such a path). Import with the run folder as
  the particle data path.
- ``blob/path`` stack file (as in ``rlnImageName``), ``blob/idx`` 0-based index in it,
  ``blob/shape`` (rows, columns) in pixels, ``blob/psize_A`` Å/pixel, ``blob/sign``
  +1 because our stacks are contrast-inverted (protein white).
- ``ctf/*``: ``df1_A``/``df2_A`` = rlnDefocusU/V (Å), ``df_angle_rad`` = rlnDefocusAngle
  in radians, ``accel_kv``, ``cs_mm``, ``amp_contrast``, ``phase_shift_rad``,
  ``exp_group_id`` = RELION optics group.
- ``location/*``: ``micrograph_path``, ``micrograph_shape`` (rows, columns),
  ``center_x_frac`` = rlnCoordinateX / columns, ``center_y_frac`` = rlnCoordinateY / rows.
  Written only when the micrograph shapes are known (argument, or readable MRC headers).
- ``alignments3D/*`` (only for posed particles): ``pose`` is the axis-angle vector
  (radians) of the transpose of RELION's rotation matrix A (``pipeline.geometry``), the
  convention of pyem's csparc2star; ``shift`` = rlnOriginX/YAngst / pixel size, in pixels;
  ``split`` = rlnRandomSubset − 1.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_path
from pipeline.io.particles import (
    ORIGIN_COLUMNS,
    POSE_COLUMNS,
    ParticleTable,
    validate,
)
from pipeline.io.paths import resolve_data_path


class CSError(CryofacError):
    """A cryoSPARC .cs file cannot be written or read."""


_CTF_ZERO_VECTORS = {
    "ctf/shift_A": 2,
    "ctf/tilt_A": 2,
    "ctf/trefoil_A": 2,
    "ctf/tetra_A": 4,
    "ctf/anisomag": 4,
}


def _stable_uid(text: str) -> int:
    """A deterministic 63-bit id for a micrograph path (cryoSPARC uses random u8 uids)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _micrograph_shapes(
    names: list[str], shapes: Mapping[str, tuple[int, int]] | None, base_dir: Path | None
) -> dict[str, tuple[int, int]] | None:
    """(rows, columns) of every micrograph, from ``shapes`` or from the MRC headers."""
    found: dict[str, tuple[int, int]] = {}
    for name in set(names):
        if shapes is not None and name in shapes:
            found[name] = (int(shapes[name][0]), int(shapes[name][1]))
            continue
        # relative to base_dir (old layout), a folder above it (the run folder, whose
        # paths the workflow's STAR files use) or the working folder
        anchor = base_dir / "particles.cs" if base_dir is not None else None
        path = resolve_data_path(name, anchor)
        try:
            import mrcfile

            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as handle:
                found[name] = (int(handle.header.ny), int(handle.header.nx))
        except (OSError, ValueError):
            return None
    return found


def table_to_dataset(
    table: ParticleTable,
    micrograph_shapes: Mapping[str, tuple[int, int]] | None = None,
    base_dir: str | os.PathLike | None = None,
):
    """A cryosparc-tools ``Dataset`` with blob/ctf (+location, +alignments3D) fields."""
    from cryosparc.dataset import Dataset

    validate(table)
    parts = table.particles.reset_index(drop=True)
    optics = table.optics_for_particles().reset_index(drop=True)
    indices, stacks = table.image_locations()
    n = len(parts)
    psize = optics["rlnImagePixelSize"].to_numpy(np.float32)
    box = optics["rlnImageSize"].to_numpy(np.uint32)
    group = parts["rlnOpticsGroup"].to_numpy(np.uint32)

    fields: list[tuple] = [
        ("blob/path", "O"),
        ("blob/idx", "<u4"),
        ("blob/shape", "<u4", (2,)),
        ("blob/psize_A", "<f4"),
        ("blob/sign", "<f4"),
        ("ctf/type", "O"),
        ("ctf/exp_group_id", "<u4"),
        ("ctf/accel_kv", "<f4"),
        ("ctf/cs_mm", "<f4"),
        ("ctf/amp_contrast", "<f4"),
        ("ctf/df1_A", "<f4"),
        ("ctf/df2_A", "<f4"),
        ("ctf/df_angle_rad", "<f4"),
        ("ctf/phase_shift_rad", "<f4"),
        ("ctf/scale", "<f4"),
        ("ctf/scale_const", "<f4"),
        ("ctf/bfactor", "<f4"),
    ] + [(name, "<f4", (k,)) for name, k in _CTF_ZERO_VECTORS.items()]

    shapes = None
    if table.has_locations:  # a particle set without coordinates has no location fields
        names = parts["rlnMicrographName"].astype(str).tolist()
        base = Path(base_dir) if base_dir else None
        shapes = _micrograph_shapes(names, micrograph_shapes, base)
    if shapes is not None:
        fields += [
            ("location/micrograph_uid", "<u8"),
            ("location/exp_group_id", "<u4"),
            ("location/micrograph_path", "O"),
            ("location/micrograph_shape", "<u4", (2,)),
            ("location/micrograph_psize_A", "<f4"),
            ("location/center_x_frac", "<f4"),
            ("location/center_y_frac", "<f4"),
        ]
    if table.has_poses:
        fields += [
            ("alignments3D/split", "<u4"),
            ("alignments3D/shift", "<f4", (2,)),
            ("alignments3D/pose", "<f4", (3,)),
            ("alignments3D/psize_A", "<f4"),
            ("alignments3D/error", "<f4"),
            ("alignments3D/cross_cor", "<f4"),
            ("alignments3D/alpha", "<f4"),
            ("alignments3D/weight", "<f4"),
            ("alignments3D/class_posterior", "<f4"),
            ("alignments3D/class", "<u4"),
        ]
    dataset = Dataset.allocate(n, fields)

    def col(name: str, default: float = 0.0) -> np.ndarray:
        if name in parts.columns:
            return parts[name].to_numpy(np.float64)
        return np.full(n, default)

    dataset["blob/path"] = np.asarray(stacks, dtype=object)
    dataset["blob/idx"] = indices.astype(np.uint32)
    dataset["blob/shape"] = np.stack([box, box], axis=1)
    dataset["blob/psize_A"] = psize
    dataset["blob/sign"] = 1.0
    dataset["ctf/type"] = np.asarray(["spline"] * n, dtype=object)
    dataset["ctf/exp_group_id"] = group
    dataset["ctf/accel_kv"] = optics["rlnVoltage"].to_numpy(np.float32)
    dataset["ctf/cs_mm"] = optics["rlnSphericalAberration"].to_numpy(np.float32)
    dataset["ctf/amp_contrast"] = optics["rlnAmplitudeContrast"].to_numpy(np.float32)
    dataset["ctf/df1_A"] = col("rlnDefocusU")
    dataset["ctf/df2_A"] = col("rlnDefocusV")
    dataset["ctf/df_angle_rad"] = np.deg2rad(col("rlnDefocusAngle"))
    dataset["ctf/phase_shift_rad"] = np.deg2rad(col("rlnPhaseShift"))
    dataset["ctf/scale"] = col("rlnCtfScalefactor", 1.0)
    dataset["ctf/bfactor"] = col("rlnCtfBfactor")

    if shapes is not None:
        mshape = np.asarray([shapes[m] for m in names], dtype=np.uint32).reshape(n, 2)
        mic_psize = (
            optics["rlnMicrographOriginalPixelSize"].to_numpy(np.float32)
            if "rlnMicrographOriginalPixelSize" in optics.columns
            else psize
        )
        dataset["location/micrograph_uid"] = np.asarray(
            [_stable_uid(m) for m in names], dtype=np.uint64
        )
        dataset["location/exp_group_id"] = group
        dataset["location/micrograph_path"] = np.asarray(names, dtype=object)
        dataset["location/micrograph_shape"] = mshape
        dataset["location/micrograph_psize_A"] = mic_psize
        dataset["location/center_x_frac"] = col("rlnCoordinateX") / mshape[:, 1]
        dataset["location/center_y_frac"] = col("rlnCoordinateY") / mshape[:, 0]

    if table.has_poses:
        from scipy.spatial.transform import Rotation

        from pipeline.geometry import euler_to_matrix

        a = euler_to_matrix(*(parts[c].to_numpy(np.float64) for c in POSE_COLUMNS))
        dataset["alignments3D/pose"] = Rotation.from_matrix(np.swapaxes(a, -1, -2)).as_rotvec()
        origin_A = np.stack([col(ORIGIN_COLUMNS[0]), col(ORIGIN_COLUMNS[1])], axis=1)
        dataset["alignments3D/shift"] = origin_A / psize[:, None]
        dataset["alignments3D/psize_A"] = psize
        split = col("rlnRandomSubset", 1.0) - 1.0
        dataset["alignments3D/split"] = np.clip(split, 0, None).astype(np.uint32)
        dataset["alignments3D/alpha"] = 1.0
        dataset["alignments3D/weight"] = 1.0
        dataset["alignments3D/class_posterior"] = 1.0
        dataset["alignments3D/class"] = np.clip(col("rlnClassNumber", 1.0) - 1, 0, None)
    return dataset


def write_cs(
    path: str | os.PathLike,
    table: ParticleTable,
    micrograph_shapes: Mapping[str, tuple[int, int]] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the particles of ``table`` as a cryoSPARC ``.cs`` file.

    Poses (``rlnAngleRot/Tilt/Psi``, ``rlnOriginX/YAngst``) become ``alignments3D/*``
    when present. ``micrograph_shapes`` maps rlnMicrographName → (rows, columns); without
    it the MRC headers are read (relative names resolved against ``base_dir`` or a
    folder above it, else against the working folder; default ``base_dir``: the
    folder of ``path``), and
    ``location/*`` is left out if a micrograph cannot be read.
    """
    path = Path(path)
    base = base_dir if base_dir is not None else path.parent
    dataset = table_to_dataset(table, micrograph_shapes, base)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        dataset.save(handle)
    return path


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def dataset_to_table(dataset, where: str = "dataset") -> ParticleTable:
    """A RELION :class:`ParticleTable` from a cryoSPARC particle ``Dataset``."""
    fields = set(dataset.fields())
    required = ["blob/path", "blob/idx", "blob/shape", "blob/psize_A", "ctf/df1_A", "ctf/df2_A"]
    missing = [f for f in required if f not in fields]
    if missing:
        raise CSError(f"{where}: missing field(s) {', '.join(missing)}")
    n = len(dataset)

    def get(name: str, default: float = 0.0) -> np.ndarray:
        return (
            np.asarray(dataset[name], dtype=np.float64) if name in fields else np.full(n, default)
        )

    psize = get("blob/psize_A")
    box = np.asarray(dataset["blob/shape"])[:, 0].astype(int)
    group_ids = get("ctf/exp_group_id", 1.0).astype(int)
    group_ids = np.where(group_ids < 1, 1, group_ids) if "ctf/exp_group_id" in fields else group_ids
    optics_rows = pd.DataFrame(
        {
            "rlnOpticsGroup": group_ids,
            "rlnAmplitudeContrast": get("ctf/amp_contrast", 0.07),
            "rlnSphericalAberration": get("ctf/cs_mm", 2.7),
            "rlnVoltage": get("ctf/accel_kv", 300.0),
            "rlnImagePixelSize": psize,
            "rlnMicrographOriginalPixelSize": get("location/micrograph_psize_A", np.nan),
            "rlnImageSize": box,
        }
    )
    if optics_rows["rlnMicrographOriginalPixelSize"].isna().all():
        optics_rows["rlnMicrographOriginalPixelSize"] = psize
    optics = optics_rows.drop_duplicates("rlnOpticsGroup").sort_values("rlnOpticsGroup")
    optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]])
    optics["rlnImageDimensionality"] = 2
    optics = optics.reset_index(drop=True)

    stacks = _text(dataset["blob/path"])
    idx = np.asarray(dataset["blob/idx"], dtype=np.int64)
    parts = pd.DataFrame(
        {"rlnImageName": [f"{i + 1:06d}@{s}" for i, s in zip(idx, stacks, strict=True)]}
    )
    if "location/micrograph_path" in fields:
        shape = np.asarray(dataset["location/micrograph_shape"], dtype=np.float64)
        parts["rlnMicrographName"] = _text(dataset["location/micrograph_path"])
        parts["rlnCoordinateX"] = get("location/center_x_frac") * shape[:, 1]
        parts["rlnCoordinateY"] = get("location/center_y_frac") * shape[:, 0]
    else:
        parts["rlnMicrographName"] = stacks
        parts["rlnCoordinateX"] = 0.0
        parts["rlnCoordinateY"] = 0.0
    parts["rlnOpticsGroup"] = group_ids
    parts["rlnDefocusU"] = get("ctf/df1_A")
    parts["rlnDefocusV"] = get("ctf/df2_A")
    parts["rlnDefocusAngle"] = np.rad2deg(get("ctf/df_angle_rad"))
    parts["rlnPhaseShift"] = np.rad2deg(get("ctf/phase_shift_rad"))
    parts["rlnCtfBfactor"] = get("ctf/bfactor")
    parts["rlnCtfScalefactor"] = get("ctf/scale", 1.0)
    if "alignments3D/pose" in fields:
        from scipy.spatial.transform import Rotation

        from pipeline.geometry import matrix_to_euler

        pose = np.asarray(dataset["alignments3D/pose"], dtype=np.float64)
        a = np.swapaxes(Rotation.from_rotvec(pose).as_matrix(), -1, -2)
        rot, tilt, psi = matrix_to_euler(a)
        parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = rot, tilt, psi
        shift = np.asarray(dataset["alignments3D/shift"], dtype=np.float64)
        apix = get("alignments3D/psize_A", np.nan)
        apix = np.where(np.isfinite(apix) & (apix > 0), apix, psize)
        parts["rlnOriginXAngst"] = shift[:, 0] * apix
        parts["rlnOriginYAngst"] = shift[:, 1] * apix
        if "alignments3D/split" in fields:
            parts["rlnRandomSubset"] = get("alignments3D/split").astype(int) + 1
    table = ParticleTable(optics=optics, particles=parts)
    validate(table, where)
    return table


def read_cs(path: str | os.PathLike) -> ParticleTable:
    """Read a cryoSPARC particle ``.cs`` file into a RELION :class:`ParticleTable`."""
    from cryosparc.dataset import Dataset

    path = Path(path)
    if not path.exists():
        raise CSError(f"{path}: file not found")
    try:
        dataset = Dataset.load(str(path))
    except Exception as exc:  # numpy/cryosparc raise assorted errors on bad files
        raise CSError(
            f"{path}: not a readable cryoSPARC .cs file ({exc})".splitlines()[0]
        ) from None
    return dataset_to_table(dataset, str(path))
