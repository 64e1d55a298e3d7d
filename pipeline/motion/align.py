"""Iterative full-frame alignment (MotionCor2 / RELION style) on Fourier-cropped frames.

Each frame's spectrum is cross-correlated with the sum of all *other* aligned frames,
with a B-factor exp(−B·k²/4) on the cross-correlation; the peak is located to sub-pixel
precision by a 3-point parabola per axis, the frames are re-shifted in Fourier space and
the process repeats until the RMS update is below a tolerance. As the residual goes to
zero the peak becomes symmetric, so the parabola's bias vanishes at convergence.

Shifts returned here are specimen drift (see :mod:`pipeline.motion`): frame f shows the
specimen displaced by ``drift[f]`` relative to frame 0; ``drift[0] = (0, 0)``.
Everything runs on the active backend (numpy/scipy.fft or CuPy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import backend


def edge_taper(shape: tuple[int, int], fraction: float = 0.1) -> Any:
    """Separable cosine taper: 1 inside, 0 at the border, over ``fraction`` of each side."""
    xp = backend.xp()

    def ramp(n: int):
        m = max(1, int(round(n * fraction)))
        w = np.ones(n, np.float32)
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        w[:m] = edge
        w[-m:] = edge[::-1]
        return w

    return backend.asarray(np.outer(ramp(shape[0]), ramp(shape[1])), dtype=xp.float32)


def fourier_crop(spectrum: Any, out_shape: tuple[int, int]) -> Any:
    """Crop rfft2 spectra (..., ny, nx//2+1) to the rfft2 grid of an image of ``out_shape``.

    Binning by Fourier cropping: the result, inverse-transformed at ``out_shape``, is the
    band-limited image at the coarser pixel size (the amplitude scales with the area).
    """
    ny_out, nx_out = out_shape
    ny = spectrum.shape[-2]
    xp = backend.xp()
    half = ny_out // 2
    top = spectrum[..., :half, : nx_out // 2 + 1]
    bottom = spectrum[..., ny - (ny_out - half) :, : nx_out // 2 + 1]
    return xp.concatenate([top, bottom], axis=-2)


def frequencies_cycles_per_px(shape: tuple[int, int]) -> tuple[Any, Any]:
    """(kx (1, nx//2+1), ky (ny, 1)) in cycles per pixel on the rfft2 grid of ``shape``."""
    xp = backend.xp()
    ny, nx = shape
    kx = xp.fft.rfftfreq(nx).astype(xp.float32)[None, :]
    ky = xp.fft.fftfreq(ny).astype(xp.float32)[:, None]
    return kx, ky


def shift_ramp(shape: tuple[int, int], shift_xy: Any) -> Any:
    """Fourier factor that turns f(x) into f(x + s) (moves content by −s), rfft2 grid.

    ``shift_xy`` is (2,) or (m, 2) pixels [x, y]; the result is (ny, nx//2+1) or
    (m, ny, nx//2+1) complex64. Separable: exp(2πi kx sx) · exp(2πi ky sy).
    """
    xp = backend.xp()
    kx, ky = frequencies_cycles_per_px(shape)
    s = xp.asarray(shift_xy, dtype=xp.float32)
    single = s.ndim == 1
    s = s.reshape(-1, 2)
    rx = xp.exp((2j * math.pi) * kx[None] * s[:, 0, None, None]).astype(xp.complex64)
    ry = xp.exp((2j * math.pi) * ky[None] * s[:, 1, None, None]).astype(xp.complex64)
    ramp = rx * ry
    return ramp[0] if single else ramp


def apply_shift(spectrum: Any, shift_xy: Any) -> Any:
    """Multiply rfft2 spectra in place by the ramps of :func:`shift_ramp`.

    ``spectrum`` is (ny, nx//2+1) with ``shift_xy`` (2,), or (m, ny, nx//2+1) with (m, 2).
    Two broadcast multiplications instead of building the full complex ramp.
    """
    xp = backend.xp()
    ny = spectrum.shape[-2]
    nx = 2 * (spectrum.shape[-1] - 1)
    kx, ky = frequencies_cycles_per_px((ny, nx))
    s = np.asarray(backend.to_numpy(shift_xy), dtype=np.float64)
    if s.ndim == 1:
        spectrum *= xp.exp((2j * math.pi * float(s[0])) * kx).astype(xp.complex64)
        spectrum *= xp.exp((2j * math.pi * float(s[1])) * ky).astype(xp.complex64)
        return spectrum
    sx = backend.asarray(s[:, 0], dtype=xp.float32)[:, None, None]
    sy = backend.asarray(s[:, 1], dtype=xp.float32)[:, None, None]
    spectrum *= xp.exp((2j * math.pi) * (kx[None] * sx)).astype(xp.complex64)
    spectrum *= xp.exp((2j * math.pi) * (ky[None] * sy)).astype(xp.complex64)
    return spectrum


def bfactor_weight(shape: tuple[int, int], pixel_size_A: float, bfactor_A2: float) -> Any:
    """exp(−B·k²/4) on the rfft2 grid, k in 1/Å, with the DC term set to 0 (float32)."""
    xp = backend.xp()
    kx, ky = frequencies_cycles_per_px(shape)
    k2 = (kx * kx + ky * ky) / (pixel_size_A * pixel_size_A)
    w = xp.exp(-bfactor_A2 * k2 / 4.0).astype(xp.float32)
    w[0, 0] = 0.0
    return w


def subpixel_peak(cc: Any, max_shift_px: float) -> tuple[float, float]:
    """Position (x, y) in pixels of the maximum of a circular correlation map ``cc``.

    Searches |x|, |y| ≤ ``max_shift_px`` around the origin (FFT order) and refines with a
    3-point parabola per axis. Works for a single 2D map on either device.
    """
    ny, nx = cc.shape
    r = int(max(1, min(math.floor(max_shift_px), ny // 2 - 2, nx // 2 - 2)))
    xp = backend.xp()
    rows = xp.concatenate([cc[ny - r :], cc[: r + 1]], axis=0)
    window = xp.concatenate([rows[:, nx - r :], rows[:, : r + 1]], axis=1)
    w = backend.to_numpy(window).astype(np.float64)
    iy, ix = np.unravel_index(int(np.argmax(w)), w.shape)
    iy_c = min(max(iy, 1), w.shape[0] - 2)
    ix_c = min(max(ix, 1), w.shape[1] - 2)

    def refine(vm: float, v0: float, vp: float) -> float:
        denom = vm + vp - 2.0 * v0
        if abs(denom) < 1e-30:
            return 0.0
        return float(np.clip(0.5 * (vm - vp) / denom, -0.5, 0.5))

    dx = refine(w[iy_c, ix_c - 1], w[iy_c, ix_c], w[iy_c, ix_c + 1]) if ix == ix_c else 0.0
    dy = refine(w[iy_c - 1, ix_c], w[iy_c, ix_c], w[iy_c + 1, ix_c]) if iy == iy_c else 0.0
    return ix - r + dx, iy - r + dy


@dataclass
class AlignmentResult:
    drift_px: np.ndarray  # (n_frames, 2) [x, y] in pixels of the aligned spectra
    iterations: int
    converged: bool
    last_rms_px: float


def align_spectra(
    spectra: Any,
    image_shape: tuple[int, int],
    pixel_size_A: float,
    *,
    bfactor_A2: float = 500.0,
    max_shift_px: float = 40.0,
    max_iterations: int = 15,
    tolerance_px: float = 0.01,
    initial_drift_px: np.ndarray | None = None,
) -> AlignmentResult:
    """Align frames given their rfft2 spectra (n, ny, nx//2+1) on the active device.

    ``pixel_size_A`` is the pixel size of ``image_shape`` (after any binning) and sets the
    B-factor's frequency scale. Returns drift relative to frame 0 in those pixels.
    """
    xp = backend.xp()
    fft = backend.fft()
    n = spectra.shape[0]
    weight = bfactor_weight(image_shape, pixel_size_A, bfactor_A2)
    drift = np.zeros((n, 2)) if initial_drift_px is None else np.array(initial_drift_px, float)
    converged = False
    rms = float("inf")
    iterations = 0
    for iteration in range(1, max_iterations + 1):
        iterations = iteration
        ramps = shift_ramp(image_shape, drift)
        aligned = spectra * ramps
        total = aligned.sum(axis=0)
        delta = np.zeros((n, 2))
        for f in range(n):
            cross = xp.conj(aligned[f]) * (total - aligned[f]) * weight
            cc = fft.irfft2(cross, s=image_shape)
            px, py = subpixel_peak(cc, max_shift_px)
            # peak at −residual: the frame still shows the specimen moved by −peak
            delta[f] = (-px, -py)
        delta -= delta[0]
        drift += delta
        drift -= drift[0]
        rms = float(np.sqrt(np.mean(np.sum(delta * delta, axis=1))))
        if rms < tolerance_px:
            converged = True
            break
    return AlignmentResult(drift, iterations, converged, rms)
