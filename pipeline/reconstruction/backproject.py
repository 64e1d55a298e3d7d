"""CTF-weighted Fourier back-projection with Wiener regularisation (RELION-style).

Each image's half-plane Fourier values X, CTF c and noise power σ²(k) are inserted
into a ×2 padded 3D grid by trilinear spreading: data += c·X/σ², weight += c²/σ².
The map is data / (weight + 1/τ²(k)) where the per-shell regulariser comes from the
spectral SNR (from the half-map FSC, ``SSNR = FSC/(1−FSC)``), followed by the
inverse FFT, cropping and gridding correction; with a point-group symmetry the
map is then averaged over the group.
"""

from __future__ import annotations

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier
from pipeline.reconstruction.grids import radius_grid, shell_mean
from pipeline.reconstruction.symmetry import symmetrise_volume


class Backprojector:
    """Accumulates CTF-weighted slices for one map of box ``box`` pixels."""

    def __init__(self, box: int, symmetry: str = "C1"):
        xp = backend.xp()
        self.box = box
        self.symmetry = symmetry
        size = fourier.PAD * box
        self.data = xp.zeros((size,) * 3, dtype=xp.complex64)
        self.weight = xp.zeros((size,) * 3, dtype=xp.float32)

    def insert(
        self,
        values,
        ctf,
        rotations: np.ndarray,
        plane: fourier.HalfPlane,
        noise_inv=None,
        batch: int = 256,
    ) -> None:
        """Insert images (n, K) with CTFs (n, K) at poses (n, 3, 3); ``values`` already re-centred.

        ``noise_inv`` (K,) is 1/σ²(k) (default 1).
        """
        xp = backend.xp()
        n, count = values.shape
        rot = np.asarray(rotations)
        inv = xp.ones(count, dtype=xp.float32) if noise_inv is None else noise_inv[:count]
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            c = backend.asarray(ctf[start:stop], dtype=xp.float32)
            x = backend.asarray(values[start:stop], dtype=xp.complex64)
            vals = c * x * inv
            wts = c * c * inv
            coords = fourier.plane_coords(rot[start:stop], plane, count)
            d, w = fourier.scatter(self.data.shape, coords, vals, wts)
            self.data += d
            self.weight += w

    def add(self, other: Backprojector, scale: float = 1.0) -> None:
        """Add another accumulator's sums (scaled), e.g. for running averages."""
        self.data += scale * other.data
        self.weight += scale * other.weight

    def scale(self, factor: float) -> None:
        self.data *= factor
        self.weight *= factor

    def reconstruct(
        self,
        max_radius_px: float,
        fsc=None,
        ssnr_default: float = 1.0,
    ):
        """Wiener-regularised map (N, N, N) float32 on device, band-limited to ``max_radius_px``.

        ``fsc`` (shells in cycles per box) gives SSNR = FSC/(1−FSC) per shell; without it
        a constant ``ssnr_default`` is used.
        """
        xp = backend.xp()
        size = fourier.PAD * self.box
        data = fourier.hermitian_fill(self.data)
        weight = fourier.hermitian_fill(self.weight, conj=False)
        rad = radius_grid(size) / fourier.PAD
        shells = xp.rint(rad).astype(xp.int64)
        n_shells = self.box // 2 + 1
        mean_w = shell_mean(weight, shells, n_shells)
        if fsc is None:
            ssnr = xp.full(n_shells, ssnr_default, dtype=xp.float64)
        else:
            f = xp.clip(backend.asarray(fsc, dtype=xp.float64)[:n_shells], 1e-3, 0.999)
            ssnr = f / (1.0 - f)
        reg_shell = mean_w / ssnr
        reg_shell = xp.concatenate([reg_shell, xp.full(1, 1e30)])
        reg = reg_shell[xp.minimum(shells, n_shells)].astype(xp.float32)
        denom = weight + reg
        out = xp.where(denom > 0, data / xp.maximum(denom, 1e-30), 0).astype(xp.complex64)
        out[rad > max_radius_px] = 0
        return symmetrise_volume(fourier.unpad_fourier(out, self.box), self.symmetry)


def reconstruct(
    values,
    ctf,
    rotations: np.ndarray,
    plane: fourier.HalfPlane,
    max_radius_px: float | None = None,
    symmetry: str = "C1",
    noise_inv=None,
    fsc=None,
    ssnr_default: float = 1.0,
):
    """One-shot reconstruction from half-plane image values at known poses (see :class:`Backprojector`)."""
    bp = Backprojector(plane.box, symmetry)
    bp.insert(values, ctf, rotations, plane, noise_inv)
    radius = plane.radius[values.shape[1] - 1] if max_radius_px is None else max_radius_px
    return bp.reconstruct(radius, fsc=fsc, ssnr_default=ssnr_default)
