"""Thin helpers over ``starfile`` for RELION STAR tables: atomic writes, column checks.

:func:`read_star` returns ``{block name: DataFrame}`` (or a dict of scalars for a
non-loop block); :func:`read_table` returns one block and checks that it holds the
required columns. :func:`write_star` writes through a temporary file renamed into place,
so a reader (or a restarted workflow) never sees half a file.

Motion-correction shifts follow RELION: ``rlnMicrographShiftX/Y`` (pixels) is the shift
*applied to* frame f to align it onto frame 1, i.e. minus the specimen drift
(RELION ``motioncorr_runner.cpp`` stores the cross-correlation peak of the frame
against the reference and shifts frames by −peak). See :func:`write_shifts`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_path


class StarError(CryofacError):
    """A STAR file is missing, malformed, or lacks a block or column the caller needs."""


def read_star(path: str | os.PathLike) -> dict[str, Any]:
    """All blocks of a STAR file as ``{name: DataFrame or dict}``."""
    import starfile

    path = Path(path)
    if not path.exists():
        raise StarError(f"{path}: file not found")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise StarError(f"{path}: not a readable STAR file ({exc})".splitlines()[0]) from None
    if not blocks:
        raise StarError(f"{path}: STAR file holds no data blocks")
    return dict(blocks)


def read_table(
    path: str | os.PathLike, block: str | None = None, required: Iterable[str] = ()
) -> pd.DataFrame:
    """One loop block as a DataFrame; ``block=None`` takes the first loop block.

    Raises :class:`StarError` naming the file, block and missing columns.
    """
    path = Path(path)
    blocks = read_star(path)
    if block is None:
        tables = [(k, v) for k, v in blocks.items() if isinstance(v, pd.DataFrame)]
        if not tables:
            raise StarError(f"{path}: no loop_ table in the file")
        block, table = tables[0]
    else:
        if block not in blocks:
            raise StarError(f"{path}: no data_{block} block (has: {', '.join(blocks)})")
        table = blocks[block]
        if not isinstance(table, pd.DataFrame):
            table = pd.DataFrame([table])
    check_columns(table, required, f"{path} data_{block}")
    return table


def check_columns(table: pd.DataFrame, required: Iterable[str], where: str) -> None:
    """Raise :class:`StarError` if ``table`` lacks any of ``required`` columns."""
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise StarError(f"{where}: missing column(s) {', '.join(missing)}")


def write_star(
    path: str | os.PathLike, blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]]
) -> Path:
    """Write ``{block name: DataFrame or dict}`` atomically (temporary file then rename)."""
    import starfile

    path = Path(path)
    with atomic_path(path) as tmp:
        starfile.write(dict(blocks), tmp, overwrite=True)
    return path


def shifts_table(drift_px: np.ndarray) -> pd.DataFrame:
    """RELION global-shift table from specimen drift (n_frames, 2) [x, y] in pixels.

    ``rlnMicrographShiftX/Y = −drift`` relative to frame 1 (frame 1 is 0, 0).
    """
    drift = np.asarray(drift_px, dtype=np.float64)
    drift = drift - drift[0]
    return pd.DataFrame(
        {
            "rlnMicrographFrameNumber": np.arange(1, len(drift) + 1, dtype=int),
            "rlnMicrographShiftX": -drift[:, 0],
            "rlnMicrographShiftY": -drift[:, 1],
        }
    )


def write_shifts(
    path: str | os.PathLike,
    drift_px: np.ndarray,
    general: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<stem>_shifts.star``: optional ``data_general`` and ``data_global_shift``."""
    blocks: dict[str, Any] = {}
    if general:
        blocks["general"] = dict(general)
    blocks["global_shift"] = shifts_table(drift_px)
    return write_star(path, blocks)
