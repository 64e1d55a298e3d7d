"""Averaged power spectrum of overlapping tiles of a micrograph.

Tiles (default 512² with 50 % overlap) are mean-subtracted, tapered at the edges (cosine
over 1/16 of the tile, to suppress the edge cross), Fourier transformed in batches on the
active backend and their |F|² averaged. Returned on the host as float64 (tile, tile//2+1),
FFT order (unshifted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import backend


def edge_taper(size: int, fraction: float = 1.0 / 16) -> np.ndarray:
    """Separable 2D cosine taper: 1 inside, falling to 0 over ``fraction`` of each edge."""
    n = max(1, int(round(size * fraction)))
    w = np.ones(size)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    w[:n] = ramp
    w[-n:] = ramp[::-1]
    return np.outer(w, w)


def tile_power_spectrum(
    image: Any, tile: int = 512, overlap: float = 0.5, batch: int = 32
) -> np.ndarray:
    """Mean |FFT|² of overlapping ``tile``² tiles of ``image`` (rows, cols), FFT order."""
    xp = backend.xp()
    fft = backend.fft()
    img = backend.asarray(image, dtype=xp.float32)
    ny, nx = img.shape
    tile = int(min(tile, ny, nx))
    tile -= tile % 2
    step = max(1, int(round(tile * (1.0 - overlap))))
    ys = list(range(0, ny - tile + 1, step))
    xs = list(range(0, nx - tile + 1, step))
    corners = [(y, x) for y in ys for x in xs]
    taper = backend.asarray(edge_taper(tile), dtype=xp.float32)
    acc = xp.zeros((tile, tile // 2 + 1), dtype=xp.float64)
    for i in range(0, len(corners), batch):
        chunk = corners[i : i + batch]
        stack = xp.stack([img[y : y + tile, x : x + tile] for y, x in chunk])
        stack = stack - stack.mean(axis=(1, 2), keepdims=True)
        spec = fft.rfft2(stack * taper[None], axes=(-2, -1))
        acc += (spec.real**2 + spec.imag**2).sum(axis=0)
    return backend.to_numpy(acc / len(corners))
