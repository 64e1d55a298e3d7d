"""Real- and Fourier-space grid helpers shared by every reconstruction stage: radial
grids and shell means, soft spheres, low-pass filters, centres of mass, sub-pixel
shifts and box changes by Fourier cropping or padding.

This module sits at the bottom of :mod:`pipeline.reconstruction`: it imports only
:mod:`pipeline.backend`, and every stage may import it. Volumes are indexed (z, y, x);
shifts are (x, y, z) in pixels; resolutions in Å.
"""

from __future__ import annotations

import numpy as np

from pipeline import backend


def radius_grid(size: int):
    """|q| of a centred cubic grid of edge ``size`` in voxel units (float32, on device)."""
    xp = backend.xp()
    r = xp.arange(size, dtype=xp.float32) - size // 2
    return xp.sqrt(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)


def shell_mean(grid, shells, n_shells: int):
    """Mean of a real grid over integer shells (0..n_shells-1)."""
    xp = backend.xp()
    flat = shells.reshape(-1)
    keep = flat < n_shells
    sums = xp.bincount(
        flat[keep], weights=grid.reshape(-1)[keep].astype(xp.float64), minlength=n_shells
    )
    counts = xp.bincount(flat[keep], minlength=n_shells)
    return sums / xp.maximum(counts, 1)


def soft_sphere(box: int, radius_px: float, edge_px: float = 4.0):
    """Spherical mask (box³) with a raised-cosine edge ``edge_px`` wide (float32 on device)."""
    xp = backend.xp()
    g = xp.arange(box, dtype=xp.float32) - box // 2
    r = xp.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    t = xp.clip((r - radius_px) / edge_px, 0.0, 1.0)
    return (0.5 + 0.5 * xp.cos(np.pi * t)).astype(xp.float32)


def lowpass(volume, resolution_A: float, pixel_size_A: float, width_px: float = 2.0):
    """Raised-cosine low-pass filter of a volume at ``resolution_A`` (edge ``width_px`` shells)."""
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    box = vol.shape[0]
    kz = xp.fft.fftfreq(box, 1.0 / box)
    kx = xp.arange(box // 2 + 1)
    r = xp.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    cut = box * pixel_size_A / resolution_A
    t = xp.clip((r - cut) / width_px + 0.5, 0.0, 1.0)
    filt = 0.5 + 0.5 * xp.cos(np.pi * t)
    return fft.irfftn(fft.rfftn(vol) * filt, s=vol.shape).astype(xp.float32)


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


def sphere_points(radius_px: float) -> np.ndarray:
    """Integer Fourier points (M, 3) (x, y, z) with 0 < |k| ≤ ``radius_px``, one of each
    Friedel pair (for real correlations)."""
    g = np.arange(-int(radius_px), int(radius_px) + 1)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], -1).astype(np.float64)
    r = np.linalg.norm(pts, axis=1)
    keep = (r <= radius_px) & (r > 0)
    half = (pts[:, 2] > 0) | (
        (pts[:, 2] == 0) & ((pts[:, 1] > 0) | ((pts[:, 1] == 0) & (pts[:, 0] > 0)))
    )
    return pts[keep & half]


def change_box(volume, new_box: int):
    """A cubic volume (N³) brought to ``new_box``³ by Fourier cropping (smaller) or zero
    padding (larger) about the box centre; the pixel size becomes N/new_box times the old.

    Scaled for the image convention of :meth:`Workspace.cropped`: image Fourier values
    scale by (n/N)² when cropped, and so do the map's (its central slices are the images'
    transforms), so a map made at one box projects onto the particles cropped to another.
    Components beyond the smaller box's N/2 − 1 are dropped (no unpaired Nyquist).
    """
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    box = vol.shape[0]
    if new_box == box:
        return vol
    if new_box % 2 or box % 2:
        raise ValueError(f"boxes must be even (got {box} → {new_box} pixels)")
    f = fft.fftshift(fft.fftn(fft.ifftshift(vol)))
    m = min(box, new_box)
    keep = radius_grid(m) <= m // 2 - 1
    lo_old, lo_new = box // 2 - m // 2, new_box // 2 - m // 2
    out = xp.zeros((new_box,) * 3, dtype=xp.complex64)
    sl_old = (slice(lo_old, lo_old + m),) * 3
    sl_new = (slice(lo_new, lo_new + m),) * 3
    out[sl_new] = xp.where(keep, f[sl_old], 0) * (new_box / box) ** 2
    return fft.fftshift(fft.ifftn(fft.ifftshift(out))).real.astype(xp.float32)


def crop_box(radius_px: float, box: int, margin: float = 1.25, extra_px: float = 4.0) -> int:
    """The smallest even box (≤ ``box``) whose N/2 − 1 reaches ``margin``·radius +
    ``extra_px`` Fourier pixels (radius in cycles per full box): the box a stage searching
    out to ``radius_px`` works in."""
    want = int(np.ceil(2 * (margin * radius_px + extra_px + 1)))
    want += want % 2
    return int(min(box, max(16, want)))
