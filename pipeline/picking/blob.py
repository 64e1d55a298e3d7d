"""Blob picker: scale-normalised Laplacian-of-Gaussian between a minimum and maximum diameter.

Works on raw, noisy micrographs (RELION LoG-style):

1. Fourier-crop to ~1/20 of the particle diameter per pixel, CTF phase flip (or contrast
   inversion without a CTF) so that particles are bright, Gaussian low-pass.
2. Local normalisation: the local mean (Gaussian window of two diameters) is subtracted
   against ice gradients, and responses are divided by the background noise SD, estimated
   with peaks masked out (sigma clipping) so that thresholds mean the same at any density.
3. Scale-normalised −σ²∇²G responses for diameters between ``min_diameter_A`` and
   ``max_diameter_A`` (σ = r/√2 matches a disc of radius r); the maximum over scales.
4. Peaks with non-maximum suppression at ``nms_fraction`` × diameter, kept above
   ``threshold_sigma`` background noise SDs of the response map.
5. Screens: ice/ethane contamination (an upper threshold on the low-passed, particle-bright
   image at ``contamination_ratio`` × the typical pick, dilated by 0.3 diameter) and carbon edges / empty areas (a local-variance test
   of each pick against the population of picks). Rejected picks are kept by reason.

The figure of merit is the response height in background noise SDs.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline import backend
from pipeline.ctf_model import CTFParams
from pipeline.picking.common import (
    Picks,
    background_sigma,
    bin_and_flip,
    gaussian_blur,
    local_maxima,
    ndimage,
    robust_stats,
    subpixel_offsets,
    values_at,
)


def log_response(image, diameters_px: list[float]):
    """Max over scales of the scale-normalised −σ²∇²G response (bright blobs positive)."""
    xp, fft = backend.xp(), backend.fft()
    my, mx = image.shape
    ky = xp.fft.fftfreq(my)[:, None]
    kx = xp.fft.rfftfreq(mx)[None, :]
    k2 = (kx * kx + ky * ky).astype(xp.float32)
    spectrum = fft.rfft2(image)
    best = None
    for d in diameters_px:
        sigma = 0.5 * d / math.sqrt(2.0)
        # FT of −σ²∇²G_σ: σ²·4π²k²·exp(−2π²σ²k²)
        kernel = (sigma**2 * 4.0 * math.pi**2) * k2 * xp.exp(-2.0 * math.pi**2 * sigma**2 * k2)
        response = fft.irfft2(spectrum * kernel, s=image.shape).astype(xp.float32)
        best = response if best is None else xp.maximum(best, response)
    return best


def _disc(radius_px: float):
    radius = max(1, int(round(radius_px)))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return backend.asarray((yy * yy + xx * xx) <= radius * radius)


def contamination_mask(
    bright,
    diameter_px: float,
    candidates: tuple[np.ndarray, np.ndarray],
    ratio: float = 5.0,
    dilate_fraction: float = 0.3,
):
    """Pixels of ice/ethane contamination: regions far denser than the picked particles.

    ``bright`` is the particle-bright binned image, low-passed at a quarter diameter. Ice
    balls and ethane drops are many times denser than protein, so pixels brighter than
    ``ratio`` × the median value at the candidate picks (and at least 3 robust SDs of the
    field) are contamination; the mask is dilated by ``dilate_fraction`` × diameter (rims).
    """
    ndi = ndimage()
    smooth = gaussian_blur(bright, max(1.0, diameter_px / 4.0))
    step = max(1, smooth.shape[0] // 256)
    field_med, field_sd = robust_stats(smooth[::step, ::step])
    z = (smooth - field_med) / field_sd
    rows, cols = candidates
    typical = float(np.median(values_at(z, rows, cols))) if len(rows) else 0.0
    mask = z > max(3.0, ratio * typical)
    if bool(mask.any()):
        mask = ndi.binary_dilation(mask, structure=_disc(dilate_fraction * diameter_px))
    return mask


def local_std(image, diameter_px: float):
    """Standard deviation of ``image`` within Gaussian windows of about one diameter."""
    xp = backend.xp()
    sigma = max(1.0, diameter_px / 2.0)
    mean = gaussian_blur(image, sigma)
    return xp.sqrt(xp.maximum(gaussian_blur(image * image, sigma) - mean * mean, 0.0))


def pick_blobs(
    micrograph,
    pixel_size_A: float,
    diameter_A: float,
    *,
    min_diameter_A: float | None = None,
    max_diameter_A: float | None = None,
    ctf: CTFParams | None = None,
    threshold_sigma: float = 3.0,
    nms_fraction: float = 0.8,
    contamination_ratio: float = 5.0,
    variance_ratio: float = 3.0,
    max_picks: int | None = None,
) -> Picks:
    """Pick particles of about ``diameter_A`` (Å) on one micrograph (pixel size in Å).

    Returns :class:`Picks` with (x, y) in pixels of ``micrograph`` and a figure of merit.
    """
    if pixel_size_A <= 0 or diameter_A <= 0:
        raise ValueError(f"pixel size ({pixel_size_A} Å) and diameter ({diameter_A} Å) must be > 0")
    micrograph = backend.asarray(micrograph)
    if micrograph.ndim != 2:
        raise ValueError(f"a micrograph must be a 2D image (got shape {tuple(micrograph.shape)})")
    dmin = min_diameter_A or 0.8 * diameter_A
    dmax = max_diameter_A or 1.2 * diameter_A
    if min(micrograph.shape) * pixel_size_A < 3 * dmax:
        raise ValueError(
            f"micrograph ({micrograph.shape[1]}x{micrograph.shape[0]} px) is too small "
            f"for {dmax:.0f} Å particles"
        )
    binned = bin_and_flip(
        micrograph, pixel_size_A, diameter_A / 20.0, ctf=ctf, lowpass_A=diameter_A / 8.0
    )
    p = binned.pixel_size_A
    d_px = diameter_A / p
    # flatten the background (ice gradients) by subtracting a local mean over 2 diameters
    flattened = binned.image - gaussian_blur(binned.image, 2.0 * d_px)
    scales = list(np.linspace(dmin / p, dmax / p, 3))
    response = log_response(flattened, scales)
    border = int(math.ceil(d_px / 2.0))
    rows, cols, heights = local_maxima(response, nms_fraction * d_px, 0.0, border)
    # the LoG kernel has zero mean, so the background response is centred on 0
    noise = background_sigma(response, rows, cols, heights, 0.6 * d_px, border)
    z = response / noise
    heights = heights / noise
    rejected: dict[str, np.ndarray] = {}

    def to_xy(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        # Fourier cropping keeps pixel 0 at position 0: binned index j ↔ input pixel j·scale
        dy, dx = subpixel_offsets(z, r, c)
        sy, sx = binned.scale_yx
        return np.stack([(c + dx) * sx, (r + dy) * sy], axis=1).reshape(-1, 2)

    def reject(reason: str, bad: np.ndarray) -> None:
        nonlocal rows, cols, heights
        rejected[reason] = to_xy(rows[bad], cols[bad])
        rows, cols, heights = rows[~bad], cols[~bad], heights[~bad]

    strong = heights >= threshold_sigma
    mask = contamination_mask(binned.image, d_px, (rows[strong], cols[strong]), contamination_ratio)
    if rows.size:
        reject("contamination", values_at(mask, rows, cols).astype(bool))
    reject("below_threshold", heights < threshold_sigma)
    if rows.size > 8:
        # contamination is already handled: blank it so that its edges do not count here
        # contamination is already handled: blank it so that its edges do not count here
        spread = local_std(backend.xp().where(mask, 0.0, binned.image), d_px)
        values = values_at(spread, rows, cols)
        vmed = float(np.median(values))
        high = values > variance_ratio * vmed  # carbon edges and other strong steps
        low = values < vmed / variance_ratio  # empty areas (vacuum, ice without particles)
        reject("high_variance", high)
        low = low[~high]
        reject("empty", low)
    if max_picks is not None:
        rows, cols, heights = rows[:max_picks], cols[:max_picks], heights[:max_picks]
    return Picks(to_xy(rows, cols), heights.astype(np.float64), rejected)
