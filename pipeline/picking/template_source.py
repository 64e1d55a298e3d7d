"""Where picking templates come from: a 3D map (projections over the sphere) or a stack of
2D class averages (``.mrcs``), read from an MRC file.

A file is a **map** when it holds a cubic 3D array and is not marked as an image stack
(MRC ``ispg`` 0, as RELION/cryoSPARC write ``.mrcs``, or the ``.mrcs`` extension); every
other 2D image or 3D stack is a set of **2D templates** (protein bright, as class averages
are). Pixel sizes in Å.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryofac.errors import CryofacError


class TemplateError(CryofacError):
    """A template file is unusable (named with the reason)."""


@dataclass
class TemplateSet:
    """2D templates (n, box, box) float32 at ``pixel_size_A``; ``kind`` says where they
    came from ("map" projections or "classes") and ``n_views`` how many map views."""

    images: np.ndarray
    pixel_size_A: float
    kind: str
    n_views: int = 0


def is_map_file(path: str | os.PathLike, data: np.ndarray) -> bool:
    """True when ``data`` read from ``path`` is a 3D map rather than a stack of images."""
    if data.ndim != 3 or len(set(data.shape)) != 1 or Path(path).suffix.lower() == ".mrcs":
        return False
    import mrcfile

    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as handle:
            return int(handle.header.ispg) != 0
    except (OSError, ValueError):
        return True


def load_templates(
    path: str | os.PathLike,
    n_views: int = 50,
    pixel_size_A: float | None = None,
) -> TemplateSet:
    """Templates from ``path``: ``n_views`` projections of a map, or the images of a stack.

    ``pixel_size_A`` overrides the header's voxel size. Raises :class:`TemplateError`.
    """
    from pipeline.io.mrc import MRCError, read_mrc

    try:
        data, header_px = read_mrc(path)
    except MRCError as exc:
        raise TemplateError(str(exc)) from None
    px = pixel_size_A or header_px
    if not px or px <= 0:
        raise TemplateError(f"{path}: no pixel size in the header; use --template-pixel-size")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise TemplateError(f"{path}: templates hold NaN or infinite values")
    if is_map_file(path, data):
        from pipeline.picking.template import templates_from_map

        if n_views < 1:
            raise TemplateError(f"{path}: --template-views must be at least 1 (got {n_views})")
        return TemplateSet(templates_from_map(data, px, n_views), float(px), "map", n_views)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1] != data.shape[2]:
        raise TemplateError(f"{path}: templates must be square images (got shape {data.shape})")
    keep = data.reshape(len(data), -1).std(axis=1) > 0
    if not keep.any():
        raise TemplateError(f"{path}: every template is blank")
    return TemplateSet(data[keep], float(px), "classes")
