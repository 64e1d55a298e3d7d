"""Synthetic ground truth for reconstruction tests: Gaussian-blob volumes and
real-space projections (independent of the Fourier projector under test)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates


def blob_volume(
    box: int, rng: np.random.Generator, n_blobs: int = 14, sigma_px: tuple = (1.5, 3.5)
) -> np.ndarray:
    """An asymmetric volume (box³) of Gaussian blobs, sigma in ``sigma_px`` (pixels)."""
    centres, sigmas = [], []
    for _ in range(n_blobs):
        centres.append(rng.uniform(-box / 5, box / 5, 3))
        sigmas.append(rng.uniform(*sigma_px))
    return gaussian_blobs(box, np.array(centres), np.array(sigmas))


def gaussian_blobs(box: int, centres_px: np.ndarray, sigma_px) -> np.ndarray:
    """Gaussian blobs at (x, y, z) ``centres_px`` from the box centre (pixels), of
    ``sigma_px`` each (one value or one per blob); float32 box³."""
    g = np.arange(box) - box // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    sigmas = np.broadcast_to(np.asarray(sigma_px, dtype=float), (len(centres_px),))
    vol = np.zeros((box,) * 3)
    for c, s in zip(centres_px, sigmas, strict=True):
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol.astype(np.float32)


def real_space_projection(volume: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Sum along z of the volume rotated by ``rotation`` (RELION A), linear interpolation."""
    box = volume.shape[0]
    g = np.arange(box) - box // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    r = np.stack([x, y, z], -1) @ rotation  # row vectors: A.T @ r
    coords = np.stack([r[..., 2], r[..., 1], r[..., 0]]) + box // 2
    return map_coordinates(volume, coords, order=1).sum(0)
