"""Local (patch) motion: track patches of globally aligned frames, fit a smooth model.

After global alignment each of ``nx × ny`` patches (tiling the frame) is aligned on its
own (:func:`pipeline.motion.align.align_spectra`, weaker B-factor). The residual patch
trajectories are fitted by least squares with a polynomial model, cubic in time × cubic in
space (RELION uses quadratic in space; on simulated deformations with wavelengths of the
order of the field, cubic halves the error at the field's edges),

    Δ(x, y, t) = Σ_{k=1..3} Σ_{(i,j): i+j≤d} c_kij · t^k · x^i · y^j  (+ one offset per patch)

with x, y in [−½, ½] across the image, t = frame / (n_frames − 1) and the spatial degree
d = min(3, patches per side − 1). Terms vanish at
t = 0, so frame 1 stays the reference; the per-patch offsets absorb where each patch's
own reference frame sits. One pass of outlier rejection (4 × MAD) follows the first fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.motion.align import align_spectra, edge_taper

TIME_POWERS = (1, 2, 3)
#: patch size relative to the grid spacing (1.0: patches tile the frame without overlap)
PATCH_OVERLAP = 1.0


def spatial_terms(degree: int) -> tuple[tuple[int, int], ...]:
    """Exponents (i, j) of x^i·y^j with i + j ≤ ``degree``."""
    return tuple((i, d - i) for d in range(degree + 1) for i in range(d, -1, -1))


@dataclass
class LocalMotionModel:
    """Smooth residual motion (pixels of the full-size frame) on top of global drift."""

    coefficients: np.ndarray  # (2, len(TIME_POWERS) * len(spatial_terms)) for [x, y]
    image_shape: tuple[int, int]  # (ny, nx) full-size frame
    n_frames: int
    patch_centers_px: np.ndarray  # (p, 2) [x, y] full-size pixels
    patch_drift_px: np.ndarray  # (p, n_frames, 2) measured residuals, full-size pixels
    spatial_degree: int = 3

    def shift(self, x_px: np.ndarray, y_px: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Residual drift [x, y] in pixels at positions/frames (broadcast), shape (..., 2)."""
        design = _design(x_px, y_px, frame, self.image_shape, self.n_frames, self.spatial_degree)
        return np.stack([design @ self.coefficients[0], design @ self.coefficients[1]], -1)


def _design(x_px, y_px, frame, image_shape, n_frames, degree: int) -> np.ndarray:
    x, y, f = np.broadcast_arrays(
        np.asarray(x_px, float), np.asarray(y_px, float), np.asarray(frame, float)
    )
    xn = x / image_shape[1] - 0.5
    yn = y / image_shape[0] - 0.5
    t = f / max(n_frames - 1, 1)
    cols = [t**k * xn**i * yn**j for k in TIME_POWERS for (i, j) in spatial_terms(degree)]
    return np.stack(cols, axis=-1)


def patch_grid(
    shape: tuple[int, int], n_patches: tuple[int, int], overlap: float = 2.0
) -> tuple[list[tuple[int, int]], int, int]:
    """Top-left corners of overlapping patches and the patch size (ny_p, nx_p), even.

    Patches are twice the grid spacing (clipped to the image) so neighbours overlap by half.
    """
    ny, nx = shape
    py, px = n_patches
    size_y = min(ny, max(32, 2 * (int(overlap * ny / py) // 2)))
    size_x = min(nx, max(32, 2 * (int(overlap * nx / px) // 2)))
    corners = []
    for j in range(py):
        cy = (j + 0.5) * ny / py
        y0 = int(round(min(max(cy - size_y / 2, 0), ny - size_y)))
        for i in range(px):
            cx = (i + 0.5) * nx / px
            x0 = int(round(min(max(cx - size_x / 2, 0), nx - size_x)))
            corners.append((y0, x0))
    return corners, size_y, size_x


def track_patches(
    aligned_frames,
    pixel_size_A: float,
    n_patches: tuple[int, int],
    *,
    bfactor_A2: float = 150.0,
    max_shift_px: float = 8.0,
    tolerance_px: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Residual drift of every patch of globally aligned (binned) frames (n, ny, nx).

    Returns (centres (p, 2) [x, y] px, drift (p, n, 2) px), both in the frames' pixels.
    """
    xp = backend.xp()
    fft = backend.fft()
    n, ny, nx = aligned_frames.shape
    corners, sy, sx = patch_grid((ny, nx), n_patches, PATCH_OVERLAP)
    taper = edge_taper((sy, sx), 0.15)
    centres = []
    drifts = []
    for y0, x0 in corners:
        patch = aligned_frames[:, y0 : y0 + sy, x0 : x0 + sx]
        # mean-subtracted and edge-tapered: the patch border is static (see correct.py)
        patch = (patch - patch.mean(axis=(1, 2), keepdims=True)) * taper[None]
        spectra = fft.rfft2(patch.astype(xp.float32), axes=(-2, -1)).astype(xp.complex64)
        result = align_spectra(
            spectra,
            (sy, sx),
            pixel_size_A,
            bfactor_A2=bfactor_A2,
            max_shift_px=max_shift_px,
            tolerance_px=tolerance_px,
            max_iterations=10,
        )
        centres.append((x0 + sx / 2.0, y0 + sy / 2.0))
        drifts.append(result.drift_px)
    return np.asarray(centres), np.asarray(drifts)


def fit_local_model(
    centres_px: np.ndarray,
    patch_drift_px: np.ndarray,
    image_shape: tuple[int, int],
    degree: int | None = None,
) -> LocalMotionModel:
    """Least-squares fit of the smooth model to patch residuals (same pixel units).

    ``degree``: spatial polynomial degree [default: min(3, √patches − 1)].
    """
    p, n, _ = patch_drift_px.shape
    if degree is None:
        degree = max(1, min(3, int(math.sqrt(p)) - 1))
    n_terms = len(TIME_POWERS) * len(spatial_terms(degree))
    frames = np.arange(n)
    rows = []
    for i, (cx, cy) in enumerate(centres_px):
        design = _design(cx, cy, frames, image_shape, n, degree)
        offsets = np.zeros((n, p))
        offsets[:, i] = 1.0
        rows.append(np.hstack([design, offsets]))
    a = np.vstack(rows)
    coefficients = np.zeros((2, n_terms))
    for axis in range(2):
        b = patch_drift_px[:, :, axis].reshape(-1)
        keep = np.ones(b.shape, bool)
        for _ in range(2):
            sol, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
            resid = b - a @ sol
            mad = np.median(np.abs(resid - np.median(resid))) + 1e-9
            keep = np.abs(resid) < 4.0 * 1.4826 * mad
        coefficients[axis] = sol[:n_terms]
    return LocalMotionModel(
        coefficients, tuple(image_shape), n, np.asarray(centres_px), patch_drift_px, degree
    )
