"""Synthetic ground truth for reconstruction tests: Gaussian-blob volumes and
real-space projections (independent of the Fourier projector under test)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from pipeline.simulate.volume import blob_volume, gaussian_blobs

__all__ = ["blob_volume", "gaussian_blobs", "real_space_projection"]


def real_space_projection(volume: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Sum along z of the volume rotated by ``rotation`` (RELION A), linear interpolation."""
    box = volume.shape[0]
    g = np.arange(box) - box // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    r = np.stack([x, y, z], -1) @ rotation  # row vectors: A.T @ r
    coords = np.stack([r[..., 2], r[..., 1], r[..., 0]]) + box // 2
    return map_coordinates(volume, coords, order=1).sum(0)
