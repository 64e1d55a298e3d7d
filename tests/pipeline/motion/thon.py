"""Thon-ring resolution of an image against its known CTF (test metric, independent of
:mod:`pipeline.ctf_estimate`): per-shell correlation of the tile-averaged power spectrum
with CTF², resolution = the highest shell before the correlation first drops below 0.3."""

from __future__ import annotations

import numpy as np

from pipeline.ctf_model import CTFParams, ctf_2d


def tile_power_spectrum(image: np.ndarray, tile: int = 256) -> np.ndarray:
    ny, nx = image.shape
    acc = np.zeros((tile, tile // 2 + 1))
    count = 0
    for y0 in range(0, ny - tile + 1, tile // 2):
        for x0 in range(0, nx - tile + 1, tile // 2):
            t = image[y0 : y0 + tile, x0 : x0 + tile].astype(np.float64)
            acc += np.abs(np.fft.rfft2(t - t.mean())) ** 2
            count += 1
    return acc / count


def thon_resolution_A(
    image: np.ndarray, ctf: CTFParams, pixel_size_A: float, tile: int = 256, width: int = 6
) -> float:
    ps = tile_power_spectrum(image, tile)
    c2 = np.asarray(ctf_2d((tile, tile), pixel_size_A, ctf, rfft=True), np.float64) ** 2
    ky = np.fft.fftfreq(tile)[:, None]
    kx = np.fft.rfftfreq(tile)[None, :]
    r = np.sqrt(kx * kx + ky * ky) * tile
    best = 0.0
    for r0 in range(8, tile // 2 - width, width // 2):
        shell = (r >= r0) & (r < r0 + width)
        a = np.log(ps[shell])
        b = c2[shell]
        cc = np.corrcoef(a - a.mean(), b - b.mean())[0, 1]
        if cc < 0.3:
            break
        best = (r0 + width) / (tile * pixel_size_A)
    return 1.0 / best if best else float("inf")
