"""Motion correction of one movie: global alignment, local model, shifted dose-weighted sums.

Pass 1 streams the frames once: each is Fourier transformed and cropped to the alignment
size (default 2 Å pixels, at most 1024 pixels across). Frames are aligned globally
(:mod:`pipeline.motion.align`), then patches of the globally aligned binned frames are
tracked and fitted by a smooth model (:mod:`pipeline.motion.patches`).

Pass 2 streams the frames again and builds both sums in Fourier space:

- global only: each frame's spectrum times its shift ramp, summed with and without the
  dose weights (:mod:`pipeline.motion.dose`); exact sub-pixel Fourier shifts.
- with a local model: the frame is cut into overlapping tiles (about 8 per axis); each
  tile is shifted by the global + local drift at its centre (integer part by cutting the
  tile at an offset, fraction by a phase ramp) and accumulated per tile in Fourier space;
  the tiles are transformed back once and blended with linear ramps.

Memory: the cropped spectra (n × 1024 × 513 complex64, 168 MB for 40 frames) plus one
frame and the accumulators; a full-size 40-frame stack is never held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryofac.errors import CryofacError
from pipeline import backend
from pipeline.motion.align import (
    align_spectra,
    apply_shift,
    edge_taper,
    fourier_crop,
    shift_ramp,
)
from pipeline.motion.dose import DoseWeighter, accumulated_dose
from pipeline.motion.patches import LocalMotionModel, fit_local_model, track_patches


class MotionError(CryofacError):
    """A movie cannot be motion-corrected (too few frames, bad sizes, non-finite data)."""


@dataclass(frozen=True)
class MotionOptions:
    """How :func:`correct_movie` aligns the frames (``cryofac motioncorr``'s options)."""

    #: (columns, rows) of the local model; None: global alignment only
    patches: tuple[int, int] | None = (5, 5)
    #: frames are Fourier-cropped to this pixel size (Å) for the alignment ...
    align_pixel_A: float = 2.0
    #: ... and to at most this many pixels across
    max_align_size: int = 1024
    #: B-factor on the global cross-correlations (Å²)
    bfactor_global_A2: float = 150.0
    #: B-factor on the patches' cross-correlations (Å²)
    bfactor_local_A2: float = 150.0
    #: largest shift searched (Å)
    max_shift_A: float = 150.0
    #: the global alignment stops when the RMS change of the frame shifts falls below
    #: this (pixels of the movie) ...
    tolerance_px: float = 0.01
    #: ... or after this many rounds
    max_iterations: int = 15


DEFAULT_OPTIONS = MotionOptions()


@dataclass
class MotionCorrection:
    """Result of :func:`correct_movie`. Sums are float32 numpy arrays (ny, nx)."""

    sum_dw: np.ndarray  # dose-weighted aligned sum
    sum_nodw: np.ndarray  # aligned sum without dose weighting
    drift_px: np.ndarray  # (n_frames, 2) global specimen drift [x, y] in pixels, frame 1 = 0
    pixel_size_A: float
    dose_per_frame_e_A2: float
    local_model: LocalMotionModel | None
    accum_motion_total_A: float
    accum_motion_early_A: float
    accum_motion_late_A: float
    iterations: int
    options: MotionOptions = DEFAULT_OPTIONS  # what the alignment was asked to do


def _n_frames(source: Any) -> int:
    return len(source)


def _frame(source: Any, index: int) -> np.ndarray:
    if hasattr(source, "frame"):
        return source.frame(index)
    return np.asarray(source[index], dtype=np.float32)


def accumulated_motion(
    drift_px: np.ndarray,
    pixel_size_A: float,
    dose_per_frame_e_A2: float,
    pre_exposure_e_A2: float = 0.0,
    early_cutoff_e_A2: float = 4.0,
) -> tuple[float, float, float]:
    """(total, early, late) path length of the trajectory in Å (RELION's accumulated motion).

    The step from frame f−1 to f counts as early when the exposure at the start of frame f
    is below ``early_cutoff_e_A2`` (RELION's default 4 e/Å²), late otherwise.
    """
    steps = np.linalg.norm(np.diff(np.asarray(drift_px, float), axis=0), axis=1) * pixel_size_A
    start_dose = pre_exposure_e_A2 + dose_per_frame_e_A2 * np.arange(1, len(steps) + 1)
    early = float(steps[start_dose < early_cutoff_e_A2].sum())
    total = float(steps.sum())
    return total, early, total - early


def alignment_shape(
    shape: tuple[int, int], pixel_size_A: float, align_pixel_A: float, max_size: int
) -> tuple[int, int]:
    """Even (ny, nx) of the Fourier-cropped frames used for alignment."""
    ny, nx = shape
    factor = max(1.0, align_pixel_A / pixel_size_A, max(ny, nx) / max_size)
    cy = min(ny, 2 * max(16, int(round(ny / factor / 2))))
    cx = min(nx, 2 * max(16, int(round(nx / factor / 2))))
    return cy, cx


def correct_movie(
    source: Any,
    pixel_size_A: float,
    dose_per_frame_e_A2: float,
    options: MotionOptions = DEFAULT_OPTIONS,
    *,
    voltage_kV: float = 300.0,
    pre_exposure_e_A2: float = 0.0,
    early_cutoff_e_A2: float = 4.0,
) -> MotionCorrection:
    """Align and sum the frames of ``source`` (a :class:`pipeline.io.movie.Movie` or array).

    ``pixel_size_A``: Å per pixel of the frames; ``dose_per_frame_e_A2``: exposure per
    frame (e/Å²) after ``pre_exposure_e_A2``; ``options``: how to align
    (:class:`MotionOptions`, recorded in the result); ``early_cutoff_e_A2``: the dose that
    splits the accumulated motion into early and late (RELION).
    """
    patches = options.patches
    xp = backend.xp()
    fft = backend.fft()
    n = _n_frames(source)
    if n < 2:
        raise MotionError(f"movie has {n} frame; motion correction needs at least 2")
    if pixel_size_A <= 0:
        raise MotionError(f"pixel size must be positive (got {pixel_size_A} Å)")
    if dose_per_frame_e_A2 <= 0:
        raise MotionError(f"dose per frame must be positive (got {dose_per_frame_e_A2} e/Å²)")
    first = _frame(source, 0)
    if first.ndim != 2:
        raise MotionError(f"frames must be 2D (got shape {first.shape})")
    shape = (int(first.shape[0]), int(first.shape[1]))
    cshape = alignment_shape(shape, pixel_size_A, options.align_pixel_A, options.max_align_size)
    scale = np.array([shape[1] / cshape[1], shape[0] / cshape[0]])  # full px per crop px [x, y]
    align_pixel = pixel_size_A * float(scale.mean())

    # pass 1: cropped spectra
    taper = edge_taper(shape)
    crops = xp.empty((n, cshape[0], cshape[1] // 2 + 1), dtype=xp.complex64)
    for f in range(n):
        frame = first if f == 0 else _frame(source, f)
        if frame.shape != first.shape:
            raise MotionError(f"frame {f + 1} has shape {frame.shape}, frame 1 has {first.shape}")
        dev = backend.asarray(frame, dtype=xp.float32)
        if not bool(xp.isfinite(dev).all()):
            raise MotionError(f"frame {f + 1} holds NaN or infinite values")
        # mean-subtracted and edge-tapered for alignment only: the frame border does not
        # move with the specimen, and its periodic-wrap discontinuity would pin the
        # cross-correlation peak at zero shift
        dev -= dev.mean()
        dev *= taper
        crops[f] = fourier_crop(fft.rfft2(dev), cshape)

    result = align_spectra(
        crops,
        cshape,
        align_pixel,
        bfactor_A2=options.bfactor_global_A2,
        max_shift_px=options.max_shift_A / align_pixel,
        tolerance_px=options.tolerance_px / float(scale.mean()),
        max_iterations=options.max_iterations,
    )
    drift_crop = result.drift_px

    local = None
    if patches is not None and min(patches) >= 1 and max(patches) > 1:
        aligned = fft.irfft2(crops * shift_ramp(cshape, drift_crop), s=cshape, axes=(-2, -1))
        del crops
        centres, pdrift = track_patches(
            aligned.astype(xp.float32),
            align_pixel,
            (patches[1], patches[0]),
            bfactor_A2=options.bfactor_local_A2,
            max_shift_px=max(4.0, 20.0 / align_pixel),
        )
        del aligned
        model = fit_local_model(centres, pdrift, cshape, degree=max(1, min(3, min(patches) - 1)))
        coeffs = model.coefficients * scale[:, None]
        local = LocalMotionModel(
            coeffs,
            shape,
            n,
            centres * scale[None, :],
            pdrift * scale[None, None, :],
            model.spatial_degree,
        )
    else:
        del crops

    drift = drift_crop * scale[None, :]
    doses = accumulated_dose(n, dose_per_frame_e_A2, pre_exposure_e_A2)
    if local is None:
        sum_dw, sum_nodw = _sum_global(source, first, drift, pixel_size_A, doses, voltage_kV)
    else:
        sum_dw, sum_nodw = _sum_tiled(source, first, drift, local, pixel_size_A, doses, voltage_kV)
    total, early, late = accumulated_motion(
        drift, pixel_size_A, dose_per_frame_e_A2, pre_exposure_e_A2, early_cutoff_e_A2
    )
    return MotionCorrection(
        sum_dw=sum_dw,
        sum_nodw=sum_nodw,
        drift_px=drift,
        pixel_size_A=pixel_size_A,
        dose_per_frame_e_A2=dose_per_frame_e_A2,
        local_model=local,
        accum_motion_total_A=total,
        accum_motion_early_A=early,
        accum_motion_late_A=late,
        iterations=result.iterations,
        options=options,
    )


def _k_grid_A(shape: tuple[int, int], pixel_size_A: float) -> Any:
    xp = backend.xp()
    ky = xp.fft.fftfreq(shape[0], d=pixel_size_A).astype(xp.float32)[:, None]
    kx = xp.fft.rfftfreq(shape[1], d=pixel_size_A).astype(xp.float32)[None, :]
    return xp.sqrt(kx * kx + ky * ky)


def _sum_global(source, first, drift, pixel_size_A, doses, voltage_kV):
    xp = backend.xp()
    fft = backend.fft()
    shape = first.shape
    weighter = DoseWeighter(_k_grid_A(shape, pixel_size_A), doses, voltage_kV)
    acc = xp.zeros((shape[0], shape[1] // 2 + 1), dtype=xp.complex64)
    acc_dw = xp.zeros_like(acc)
    for f in range(len(drift)):
        frame = first if f == 0 else _frame(source, f)
        spec = fft.rfft2(backend.asarray(frame, dtype=xp.float32))
        apply_shift(spec, drift[f])
        acc += spec
        spec *= weighter.weight(f)
        acc_dw += spec
    sum_nodw = fft.irfft2(acc, s=shape).astype(xp.float32)
    sum_dw = fft.irfft2(acc_dw, s=shape).astype(xp.float32)
    return backend.to_numpy(sum_dw), backend.to_numpy(sum_nodw)


def _blend_ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    w = np.ones(length, np.float32)
    ramp = (np.arange(2 * overlap, dtype=np.float32) + 0.5) / (2 * overlap)
    if not at_start:
        w[: 2 * overlap] = ramp
    if not at_end:
        w[-2 * overlap :] = ramp[::-1]
    return w


def _sum_tiled(
    source,
    first,
    drift,
    local,
    pixel_size_A,
    doses,
    voltage_kV,
    tiles_per_axis: int = 8,
    overlap: int = 16,
    margin: int = 32,
):
    """Tile-wise Fourier shifting by global + local drift, blended back together."""
    import scipy.fft

    xp = backend.xp()
    fft = backend.fft()
    ny, nx = first.shape
    n = len(drift)
    core = max(32, 2 * int(math.ceil(max(ny, nx) / tiles_per_axis / 2)))
    ext = scipy.fft.next_fast_len(core + 2 * (overlap + margin), real=True)
    while ext % 2:
        ext = scipy.fft.next_fast_len(ext + 1, real=True)
    lo = (ext - core) // 2
    starts = [(y0, x0) for y0 in range(0, ny, core) for x0 in range(0, nx, core)]
    m = len(starts)
    centres = np.array([(x0 + core / 2.0, y0 + core / 2.0) for y0, x0 in starts])
    frames_idx = np.arange(n)
    local_shift = local.shift(
        centres[:, None, 0], centres[:, None, 1], frames_idx[None, :]
    )  # (m, n, 2)
    total_shift = drift[None, :, :] + local_shift
    ishift = np.round(total_shift).astype(int)
    fshift = total_shift - ishift
    pad = int(np.abs(ishift).max()) + ext
    weighter = DoseWeighter(_k_grid_A((ext, ext), pixel_size_A), doses, voltage_kV)
    acc = xp.zeros((m, ext, ext // 2 + 1), dtype=xp.complex64)
    acc_dw = xp.zeros_like(acc)
    for f in range(n):
        frame = first if f == 0 else _frame(source, f)
        dev = backend.asarray(frame, dtype=xp.float32)
        padded = xp.pad(dev, pad, mode="constant", constant_values=float(dev.mean()))
        stack = xp.empty((m, ext, ext), dtype=xp.float32)
        for t, (y0, x0) in enumerate(starts):
            ys = pad + y0 - lo + ishift[t, f, 1]
            xs = pad + x0 - lo + ishift[t, f, 0]
            stack[t] = padded[ys : ys + ext, xs : xs + ext]
        spec = fft.rfft2(stack, axes=(-2, -1))
        apply_shift(spec, fshift[:, f, :])
        acc += spec
        spec *= weighter.weight(f)[None]
        acc_dw += spec
    tiles = fft.irfft2(acc, s=(ext, ext), axes=(-2, -1))
    tiles_dw = fft.irfft2(acc_dw, s=(ext, ext), axes=(-2, -1))
    out = np.zeros((ny, nx), np.float64)
    out_dw = np.zeros((ny, nx), np.float64)
    wsum = np.zeros((ny, nx), np.float64)
    tiles = backend.to_numpy(tiles)
    tiles_dw = backend.to_numpy(tiles_dw)
    for t, (y0, x0) in enumerate(starts):
        ya, yb = max(0, y0 - overlap), min(ny, y0 + core + overlap)
        xa, xb = max(0, x0 - overlap), min(nx, x0 + core + overlap)
        wy = _blend_ramp(yb - ya, overlap, ya == 0, yb == ny)
        wx = _blend_ramp(xb - xa, overlap, xa == 0, xb == nx)
        w = wy[:, None] * wx[None, :]
        ty, tx = ya - (y0 - lo), xa - (x0 - lo)
        out[ya:yb, xa:xb] += w * tiles[t, ty : ty + yb - ya, tx : tx + xb - xa]
        out_dw[ya:yb, xa:xb] += w * tiles_dw[t, ty : ty + yb - ya, tx : tx + xb - xa]
        wsum[ya:yb, xa:xb] += w
    wsum = np.maximum(wsum, 1e-12)
    return (out_dw / wsum).astype(np.float32), (out / wsum).astype(np.float32)
