"""Synthetic ground truth for reconstruction tests: Gaussian-blob volumes and
real-space projections (independent of the Fourier projector under test)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from pipeline.simulate.volume import blob_volume, gaussian_blobs

__all__ = [
    "blob_volume",
    "gaussian_blobs",
    "random_search_case",
    "real_space_projection",
    "score_table",
]


def real_space_projection(volume: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Sum along z of the volume rotated by ``rotation`` (RELION A), linear interpolation."""
    box = volume.shape[0]
    g = np.arange(box) - box // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    r = np.stack([x, y, z], -1) @ rotation  # row vectors: A.T @ r
    coords = np.stack([r[..., 2], r[..., 1], r[..., 0]]) + box // 2
    return map_coordinates(volume, coords, order=1).sum(0)


def random_search_case(rng: np.random.Generator, n: int, n_ref: int, box: int = 16):
    """(data, refs, values, ctf) of ``n`` random particles and ``n_ref`` random references
    on the half plane of ``box``: white noise weights, CTFs in [0.2, 1)."""
    from pipeline.reconstruction import fourier
    from pipeline.reconstruction.search import SearchData

    plane = fourier.half_plane(box)
    k_pix = plane.kx.size

    def noise(rows: int) -> np.ndarray:
        return (
            rng.standard_normal((rows, k_pix)) + 1j * rng.standard_normal((rows, k_pix))
        ).astype(np.complex64)

    values, refs = noise(n), noise(n_ref)
    ctf = rng.uniform(0.2, 1.0, (n, k_pix)).astype(np.float32)
    data = SearchData(values, ctf, np.ones(k_pix, np.float32), plane, k_pix)
    return data, refs, values, ctf


def score_table(values: np.ndarray, ctf: np.ndarray, refs: np.ndarray, phases: np.ndarray):
    """One particle's whitened correlations (R, S) with every reference at every origin
    (``phases`` (S, K): :func:`fourier.shift_phases`), written out independently of
    :func:`search.global_search` (white noise weights)."""
    x = np.conj(values[None] * phases) * ctf  # (S, K)
    cross = (refs[:, None, :] * x[None]).real.sum(-1)  # (R, S)
    norm = (np.abs(refs) ** 2 * ctf**2).sum(-1)
    return cross / np.sqrt(norm)[:, None]
