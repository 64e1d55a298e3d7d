"""Particles ready for alignment: half-plane Fourier values, CTFs and noise weights,
at the full box or Fourier-cropped to the box a stage searches in.

:func:`build_workspace` reads the images in chunks (from a memory-mapped stack through
:class:`pipeline.reconstruction.particles.ImageSource`, or any array), so the real-space
images are never all in memory. :meth:`Workspace.cropped` gives the same particles at a
smaller box (larger pixel), as RELION and cryoSPARC bin for 2D classification and
ab-initio: the Fourier pixels up to the smaller box's N/2 − 1, scaled by (n/N)² so that
images keep their real-space intensities (:func:`grids.change_box` scales maps alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.backproject import Backprojector


@dataclass
class Workspace:
    """Particles ready for alignment: half-plane values, CTFs and noise weights (on device)."""

    values: object  # (n, K) complex64
    ctf: object  # (n, K) float32
    noise_inv: object  # (K,) float32
    plane: fourier.HalfPlane
    pixel_size_A: float
    symmetry: str = "C1"
    #: mean of the raw 1/σ²(k): log-likelihood at the best scale = noise_scale·score²/2
    noise_scale: float = 1.0

    @property
    def box(self) -> int:
        return self.plane.box

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def radius_px(self, resolution_A: float) -> float:
        """Fourier radius (cycles per box) of ``resolution_A``, capped at N/2 − 1."""
        return min(self.box * self.pixel_size_A / resolution_A, self.box // 2 - 1)

    def resolution_A(self, radius_px: float) -> float:
        return self.box * self.pixel_size_A / radius_px

    def search_data(self, resolution_A: float) -> search.SearchData:
        count = self.plane.count(self.radius_px(resolution_A))
        return search.SearchData(self.values, self.ctf, self.noise_inv, self.plane, count)

    def cropped(self, box: int) -> Workspace:
        """The same particles Fourier-cropped to ``box`` (even, ≤ N) pixels: pixel size
        N/box times larger, Fourier pixels up to box/2 − 1, values scaled by (box/N)²."""
        if box >= self.box:
            return self
        if box % 2 or box < 8:
            raise ValueError(f"cropped box must be even and at least 8 (got {box})")
        small = fourier.half_plane(box)
        lut = np.full((self.box, self.box // 2 + 1), -1, dtype=np.int64)
        lut[self.plane.ky % self.box, self.plane.kx] = np.arange(self.plane.kx.size)
        index = lut[small.ky % self.box, small.kx]
        assert (index >= 0).all()
        dev = backend.asarray(index)
        scale = (box / self.box) ** 2
        return Workspace(
            self.values[:, dev] * np.float32(scale),
            self.ctf[:, dev],
            self.noise_inv[dev],
            small,
            self.pixel_size_A * self.box / box,
            self.symmetry,
            self.noise_scale / scale**2,
        )

    def for_resolution(self, resolution_A: float, margin: float = 1.25) -> Workspace:
        """:meth:`cropped` to the smallest box that holds ``resolution_A`` with a margin
        (:func:`grids.crop_box`)."""
        from pipeline.reconstruction.grids import crop_box

        return self.cropped(crop_box(self.radius_px(resolution_A), self.box, margin))


def build_workspace(
    images,
    ctf_params,
    pixel_size_A: float,
    symmetry: str = "C1",
    chunk: int = 512,
    progress: Callable[[float], None] | None = None,
) -> Workspace:
    """Fourier-transform normalised images (n, N, N) chunk by chunk and compute their
    CTFs and noise weights. ``images`` is anything sliceable along its first axis with a
    ``shape`` (an array, or a memory-mapped :class:`particles.ImageSource`); ``progress``
    receives the fraction done."""
    from pipeline.reconstruction.particles import half_plane_ctfs, noise_power

    xp = backend.xp()
    n, box = images.shape[0], images.shape[-1]
    plane = fourier.half_plane(box)
    values = xp.empty((n, plane.rfft_index.size), dtype=xp.complex64)
    for start in range(0, n, chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float32)
        values[start : start + len(block)] = fourier.images_to_half_plane(block, plane)
        if progress:
            progress(min(n, start + chunk) / n)
    ctf = half_plane_ctfs(ctf_params, plane, pixel_size_A)
    sigma2 = noise_power(values, plane)
    noise_inv = (1.0 / xp.maximum(sigma2, 1e-12 * float(sigma2.max()))).astype(xp.float32)
    # normalise so that the weights average to one (keeps score magnitudes readable)
    scale = float(xp.mean(noise_inv))
    noise_inv = noise_inv / scale
    return Workspace(values, ctf, noise_inv, plane, pixel_size_A, symmetry, scale)


def recentre(values, origins_px: np.ndarray, plane: fourier.HalfPlane):
    """Per-particle phases that move each particle from centre + origin to the centre."""
    xp = backend.xp()
    count = values.shape[1]
    o = backend.asarray(origins_px, dtype=xp.float32)
    kx = backend.asarray(plane.kx[:count], dtype=xp.float32)
    ky = backend.asarray(plane.ky[:count], dtype=xp.float32)
    arg = (2.0 * np.pi / plane.box) * (o[:, 0, None] * kx + o[:, 1, None] * ky)
    return values * (xp.cos(arg) + 1j * xp.sin(arg)).astype(xp.complex64)


def backproject_particles(
    ws: Workspace,
    idx: np.ndarray,
    rotations: np.ndarray,
    origins_px: np.ndarray,
    batch: int = 256,
) -> Backprojector:
    """Accumulate particles ``idx`` at their poses (all Fourier pixels)."""
    return backproject_weighted(ws, idx, rotations[idx], origins_px[idx], None, batch)


def backproject_weighted(
    ws: Workspace,
    idx: np.ndarray,
    rotations: np.ndarray,
    origins_px: np.ndarray,
    weights: np.ndarray | None,
    batch: int = 256,
) -> Backprojector:
    """Accumulate particle copies ``idx`` (repeats allowed) at poses/origins given per copy,
    each scaled by ``weights`` (soft assignment; default 1)."""
    xp = backend.xp()
    bp = Backprojector(ws.box, ws.symmetry)
    for start in range(0, len(idx), batch):
        stop = min(len(idx), start + batch)
        dev = backend.asarray(idx[start:stop])
        vals = recentre(ws.values[dev], origins_px[start:stop], ws.plane)
        ctf = ws.ctf[dev]
        if weights is not None:
            # data += w·c·X and weight += w·c²: scale both X and c by √w
            root = xp.sqrt(backend.asarray(weights[start:stop], dtype=xp.float32))[:, None]
            vals = vals * root
            ctf = ctf * root
        bp.insert(vals, ctf, rotations[start:stop], ws.plane, ws.noise_inv)
    return bp
