"""Particle extraction: boxes around picks, background normalisation, contrast inversion, binning.

Conventions (RELION's): the particle centre (rounded pick coordinate) sits at pixel
``box // 2`` of the extracted box; a box that does not fit entirely inside the micrograph is
**skipped** (no padding), and the caller is told which picks were kept. Each image is
normalised to zero mean and unit standard deviation of its background, the pixels outside
a circle of ``mask_diameter_px`` (default 0.75 × box, or 1.1 × the particle diameter), and
the contrast is inverted so that protein is white. ``bin_factor`` > 1 Fourier-crops every
image from ``box`` to ``box / bin_factor`` pixels (rounded to an even size) before
normalisation; the pixel size grows by ``box / new_box``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import backend


@dataclass
class Extracted:
    """A particle stack and which picks it holds."""

    images: np.ndarray  # (n, box, box) float32, numpy
    kept: np.ndarray  # (n,) indices into the input coordinates
    pixel_size_A: float  # of the extracted images
    box_px: int


def binned_box(box_px: int, bin_factor: float) -> int:
    """Even box size after Fourier cropping ``box_px`` by ``bin_factor``."""
    if bin_factor < 1:
        raise ValueError(f"--bin must be ≥ 1 (got {bin_factor})")
    return max(2, 2 * int(round(box_px / bin_factor / 2.0)))


def fourier_crop(stack, new_box: int):
    """Fourier-crop a stack (n, N, N) to (n, new_box, new_box), keeping the mean level."""
    xp, fft = backend.xp(), backend.fft()
    n_box = stack.shape[-1]
    if new_box == n_box:
        return stack
    spectrum = fft.rfft2(stack, axes=(-2, -1))
    half = new_box // 2
    cropped = xp.concatenate(
        [spectrum[:, :half, : half + 1], spectrum[:, n_box - half :, : half + 1]], axis=1
    )
    # the Nyquist row/column of an even crop is shared by ±; keep it real-symmetric
    cropped[:, half, :] = 0
    cropped[:, :, half] = 0
    out = fft.irfft2(cropped, s=(new_box, new_box), axes=(-2, -1))
    return (out * (new_box * new_box) / (n_box * n_box)).astype(xp.float32)


def normalise_background(stack, mask_diameter_px: float):
    """Zero mean, unit SD of the pixels outside a centred circle of ``mask_diameter_px``."""
    xp = backend.xp()
    box = stack.shape[-1]
    g = xp.arange(box, dtype=xp.float32) - box // 2
    outside = xp.hypot(g[:, None], g[None, :]) > 0.5 * mask_diameter_px
    if int(outside.sum()) < 16:
        raise ValueError(
            f"mask diameter {mask_diameter_px:.1f} px leaves no background in a {box}-px box"
        )
    background = stack[:, outside]
    mean = background.mean(axis=1)
    std = background.std(axis=1)
    std = xp.where(std > 0, std, 1.0)
    return ((stack - mean[:, None, None]) / std[:, None, None]).astype(xp.float32)


def extract_particles(
    micrograph,
    coords_px: np.ndarray,
    box_px: int,
    pixel_size_A: float,
    *,
    bin_factor: float = 1.0,
    mask_diameter_px: float | None = None,
    invert: bool = True,
) -> Extracted:
    """Cut ``box_px`` boxes centred on ``coords_px`` (n, 2) [x = column, y = row] in pixels.

    ``mask_diameter_px`` is in pixels of the extracted (binned) box. Boxes reaching outside the
    micrograph are skipped; :attr:`Extracted.kept` lists the picks that were extracted.
    """
    if box_px < 8 or box_px % 2:
        raise ValueError(f"--box must be an even number of pixels ≥ 8 (got {box_px})")
    xp = backend.xp()
    image = backend.asarray(micrograph, dtype=xp.float32)
    if image.ndim != 2:
        raise ValueError(f"a micrograph must be a 2D image (got shape {tuple(image.shape)})")
    ny, nx = image.shape
    coords = np.asarray(coords_px, dtype=np.float64).reshape(-1, 2)
    new_box = binned_box(box_px, bin_factor)
    out_pixel = pixel_size_A * box_px / new_box
    half = box_px // 2
    x0 = np.rint(coords[:, 0]).astype(np.int64) - half
    y0 = np.rint(coords[:, 1]).astype(np.int64) - half
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + box_px <= nx) & (y0 + box_px <= ny)
    kept = np.nonzero(inside)[0]
    if kept.size == 0:
        return Extracted(np.zeros((0, new_box, new_box), np.float32), kept, out_pixel, new_box)
    offsets = np.arange(box_px)
    rows = backend.asarray(y0[kept][:, None, None] + offsets[None, :, None])
    cols = backend.asarray(x0[kept][:, None, None] + offsets[None, None, :])
    stack = image[rows, cols]
    if invert:
        stack = -stack
    stack = fourier_crop(stack, new_box)
    mask_d = mask_diameter_px if mask_diameter_px else 0.75 * new_box
    stack = normalise_background(stack, mask_d)
    return Extracted(backend.to_numpy(stack).astype(np.float32), kept, out_pixel, new_box)
