"""Ab-initio 3D model by stochastic projection matching from a random start.

Start: the particles of a random mini-batch back-projected at random orientations
(a featureless blob at the particles' size). Each iteration takes a new random
mini-batch, assigns every particle its best orientation and shift over a uniform
SO(3) grid and a shift grid against the current model (low-pass at a resolution
that goes from ``start_resolution_A`` to ``end_resolution_A``), and updates a
running back-projection whose earlier contributions decay by ``forget`` — an
online (stochastic) expectation-maximisation with hard assignments. The model is
kept centred on its centre of mass.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.refine import (
    Workspace,
    backproject_particles,
    backproject_weighted,
    lowpass,
)
from pipeline.reconstruction.symmetry import asymmetric_grid


def centre_of_mass_px(volume) -> np.ndarray:
    """(x, y, z) offset in pixels of the positive density's centre of mass from the box centre."""
    vol = np.clip(backend.to_numpy(volume), 0, None).astype(np.float64)
    box = vol.shape[0]
    total = vol.sum()
    if total <= 0:
        return np.zeros(3)
    g = np.arange(box) - box // 2
    return np.array(
        [
            (vol.sum(axis=(0, 1)) * g).sum() / total,
            (vol.sum(axis=(0, 2)) * g).sum() / total,
            (vol.sum(axis=(1, 2)) * g).sum() / total,
        ]
    )


def shift_volume(volume, shift_xyz_px: np.ndarray):
    """Translate a volume by (x, y, z) pixels with a Fourier phase ramp."""
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    box = vol.shape[0]
    kz = xp.fft.fftfreq(box)
    kx = xp.fft.rfftfreq(box)
    sx, sy, sz = (float(s) for s in shift_xyz_px)
    arg = -2 * np.pi * (kx[None, None, :] * sx + kz[None, :, None] * sy + kz[:, None, None] * sz)
    return fft.irfftn(fft.rfftn(vol) * xp.exp(1j * arg), s=vol.shape).astype(xp.float32)


def abinitio(
    ws: Workspace,
    rng: np.random.Generator,
    *,
    subset: np.ndarray | None = None,
    n_iterations: int = 30,
    batch_size: int = 300,
    start_resolution_A: float = 35.0,
    end_resolution_A: float = 15.0,
    max_shift_A: float | None = None,
    forget: float = 0.6,
    top_k: int = 10,
    progress: Callable[[str], None] | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """An initial model (N, N, N) numpy float32 from particles ``subset`` with no reference."""
    idx_all = np.arange(ws.n) if subset is None else np.asarray(subset)
    box, pix = ws.box, ws.pixel_size_A
    end_resolution_A = max(end_resolution_A, 2.2 * pix)
    start_resolution_A = max(start_resolution_A, end_resolution_A)
    if max_shift_A is None:
        max_shift_A = 0.06 * box * pix
    batch_size = min(batch_size, len(idx_all))
    first = rng.choice(idx_all, batch_size, replace=False)
    rots = np.zeros((ws.n, 3, 3))
    from pipeline.geometry import random_rotations

    rots[first] = random_rotations(batch_size, rng)
    origins = np.zeros((ws.n, 2))
    acc = backproject_particles(ws, first, rots, origins)
    volume = lowpass(acc.reconstruct(box // 2 - 1, ssnr_default=1.0), start_resolution_A, pix)
    for it in range(n_iterations):
        frac = it / max(1, n_iterations - 1)
        res = start_resolution_A * (end_resolution_A / start_resolution_A) ** frac
        radius = ws.radius_px(res)
        step = min(20.0, max(7.5, math.degrees(1.3 / radius)))
        data = ws.search_data(res)
        grid = asymmetric_grid(search.so3_grid(step), ws.symmetry)
        refs = fourier.project(fourier.pad_fourier(volume), grid, ws.plane, data.count)
        shift_step = max(1.0, min(res / (3 * pix), 4.0))
        shifts = search.shift_grid(max_shift_A / pix, shift_step)
        sel = np.sort(rng.choice(idx_all, batch_size, replace=False))
        best, sh, score = search.global_search(refs, data, sel, shifts, top_k=top_k)
        del refs
        if top_k == 1:
            best, sh, score = best[:, None], sh[:, None], score[:, None]
        rots[sel] = grid[best[:, 0]]
        origins[sel] = sh[:, 0]
        # soft assignment over the k best poses: posterior ∝ exp(ΔlogL), logL = scale·score²/2
        ll = 0.5 * ws.noise_scale * np.maximum(score, 0.0) ** 2
        weights = np.exp(ll - ll[:, :1])
        weights /= weights.sum(axis=1, keepdims=True)
        acc.scale(forget)
        acc.add(
            backproject_weighted(
                ws,
                np.repeat(sel, best.shape[1]),
                grid[best.ravel()],
                sh.reshape(-1, 2),
                weights.ravel(),
            )
        )
        volume = acc.reconstruct(box // 2 - 1, ssnr_default=1.0)
        com = centre_of_mass_px(lowpass(volume, res, pix))
        if np.linalg.norm(com) > 0.5:
            volume = shift_volume(volume, -com)
            acc_shift(acc, -com)
        next_res = start_resolution_A * (end_resolution_A / start_resolution_A) ** min(
            1.0, (it + 1) / max(1, n_iterations - 1)
        )
        volume = lowpass(volume, next_res, pix)
        if callback:
            callback(it, volume)
        if progress:
            progress(f"ab-initio iteration {it}: {res:.1f} Å, step {step:.1f}°")
    return backend.to_numpy(volume)


def acc_shift(acc, shift_xyz_px: np.ndarray) -> None:
    """Translate the running back-projection by (x, y, z) pixels (phase ramp on the padded grid)."""
    xp = backend.xp()
    size = acc.data.shape[0]
    q = (xp.arange(size, dtype=xp.float32) - size // 2) / size
    sx, sy, sz = (float(s) for s in shift_xyz_px)
    arg = -2 * np.pi * (q[None, None, :] * sx + q[None, :, None] * sy + q[:, None, None] * sz)
    acc.data *= xp.exp(1j * arg).astype(xp.complex64)
