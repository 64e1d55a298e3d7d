"""PNG thumbnails of a micrograph and its power spectrum, for the portal's live view.

``OUT/thumbnails/<stem>_mic.png``: the micrograph block-averaged to at most
``size`` pixels, contrast stretched between the 1st and 99th percentiles.
``OUT/thumbnails/<stem>_ps.png``: log power spectrum of the central square
(at most 1024² pixels, edge-tapered), zero frequency in the centre. Written
atomically (temporary file, rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cryofac.fileio import atomic_path


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1.0, 99.0])
    if not np.isfinite(low) or high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (np.clip(image, low, high) - low) / (high - low)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def block_average(image: np.ndarray, size: int) -> np.ndarray:
    """Average ``factor × factor`` blocks so that the longer side is at most ``size``."""
    factor = max(1, -(-max(image.shape) // size))
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    trimmed = image[:ny, :nx].astype(np.float32)
    return trimmed.reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def power_spectrum(image: np.ndarray, box: int = 1024) -> np.ndarray:
    """log(1 + |F|²) of the central square (≤ ``box``), tapered, zero frequency centred."""
    n = min(box, *image.shape)
    y0, x0 = (image.shape[0] - n) // 2, (image.shape[1] - n) // 2
    crop = image[y0 : y0 + n, x0 : x0 + n].astype(np.float32)
    crop = crop - crop.mean()
    window = np.hanning(n).astype(np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(crop * np.outer(window, window)))) ** 2
    return np.log1p(spectrum / max(float(spectrum.mean()), 1e-30))


def write_thumbnails(micrograph: str | os.PathLike, out_dir: str | os.PathLike, size: int = 512):
    """Write ``<stem>_mic.png`` and ``<stem>_ps.png`` for one micrograph; returns both paths."""
    from pipeline.io.mrc import read_mrc

    micrograph = Path(micrograph)
    image, _pixel_A = read_mrc(micrograph, mmap=True)
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[0]
    out_dir = Path(out_dir)
    stem = micrograph.name[: -len(micrograph.suffix)] if micrograph.suffix else micrograph.name
    mic = out_dir / f"{stem}_mic.png"
    ps = out_dir / f"{stem}_ps.png"
    _save_png(mic, _to_uint8(block_average(image, size)))
    _save_png(ps, _to_uint8(block_average(power_spectrum(image), size // 2)))
    return mic, ps
