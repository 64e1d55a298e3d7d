"""MRC images, stacks and volumes through mrcfile, with voxel size and atomic writes.

Arrays are (sections, rows, columns) = (z, y, x) as stored; voxel size is in Å.
Errors are :class:`MRCError` with the file name and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_path


class MRCError(CryofacError):
    """An MRC file cannot be read or is not what the caller needs."""


def read_mrc(path: str | os.PathLike, mmap: bool = False) -> tuple[np.ndarray, float]:
    """Read an MRC file; returns (data, voxel size in Å along x).

    With ``mmap=True`` the data is a read-only memory map (large movies). Raises
    :class:`MRCError` for missing, truncated or malformed files.
    """
    path = Path(path)
    if not path.exists():
        raise MRCError(f"{path}: file not found")
    try:
        if mmap:
            handle = mrcfile.mmap(path, mode="r", permissive=False)
            data = handle.data
            voxel = float(handle.voxel_size.x)
        else:
            with mrcfile.open(path, mode="r", permissive=False) as handle:
                data = handle.data.copy()
                voxel = float(handle.voxel_size.x)  # the header is gone once closed
    except (ValueError, OSError, EOFError) as exc:
        raise MRCError(f"{path}: not a readable MRC file ({exc})".replace("\n", " ")) from None
    if data is None:
        raise MRCError(f"{path}: MRC file holds no data")
    if np.iscomplexobj(data):
        raise MRCError(
            f"{path}: complex MRC data (mode {3 if data.dtype.itemsize == 4 else 4}) is not an image"
        )
    return data, voxel


def write_mrc(
    path: str | os.PathLike, data: np.ndarray, voxel_size_A: float, stack: bool = False
) -> Path:
    """Write ``data`` as MRC atomically (temporary file then rename), voxel size in Å.

    float64 is stored as float32. ``stack=True`` marks a 3D array as an image stack (.mrcs).
    """
    path = Path(path)
    if voxel_size_A <= 0:
        raise MRCError(f"{path}: voxel size must be positive (got {voxel_size_A} Å)")
    data = np.asarray(data)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as handle:
        handle.set_data(np.ascontiguousarray(data))
        if stack and data.ndim == 3:
            handle.set_image_stack()
        handle.voxel_size = voxel_size_A
        handle.update_header_stats()
    return path
