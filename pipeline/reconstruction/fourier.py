"""Fourier-space projector: central slices of a ×2 padded volume, trilinear
interpolation and the matching gridding correction.

Image Fourier pixels are addressed by integer frequencies (kx, ky) in cycles per
box (``-N/2 <= k < N/2``). Only one half of each image's Fourier plane is used
(kx > 0, or kx == 0 and ky > 0; no DC): every Friedel pair once. A pose matrix A
(:func:`pipeline.geometry.euler_to_matrix`) maps the image frequency (kx, ky, 0)
to the map frequency ``A.T @ (kx, ky, 0)``; on the ×2 padded grid of size 2N that
is index ``2·k + N`` along each axis (x, y, z) = (column, row, section).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import backend

PAD = 2


@dataclass(frozen=True)
class HalfPlane:
    """Half-plane Fourier pixels of an N×N image sorted by radius (pixels).

    ``kx, ky``: integer frequencies; ``radius``: |k| in cycles per box, ascending;
    ``rfft_index``: flat index into an ``rfft2`` array of shape (N, N//2+1).
    A prefix ``[:count(r)]`` holds every pixel with radius ≤ r.
    """

    box: int
    kx: np.ndarray
    ky: np.ndarray
    radius: np.ndarray
    rfft_index: np.ndarray

    def count(self, radius_px: float) -> int:
        """Number of pixels with |k| ≤ ``radius_px`` (cycles per box)."""
        return int(np.searchsorted(self.radius, radius_px + 1e-9, side="right"))

    def shells(self, n: int) -> np.ndarray:
        """Integer shell (rounded radius) of the first ``n`` pixels."""
        return np.rint(self.radius[:n]).astype(np.int64)


def half_plane(box: int, max_radius_px: float | None = None) -> HalfPlane:
    """The half-plane pixel set of a ``box``×``box`` image up to ``max_radius_px`` (default N/2−1)."""
    if box % 2:
        raise ValueError(f"box must be even (got {box} pixels)")
    rmax = box // 2 - 1 if max_radius_px is None else min(max_radius_px, box // 2 - 1)
    ky = np.fft.fftfreq(box, 1.0 / box).astype(np.int64)
    kx = np.arange(box // 2 + 1)
    KX, KY = np.meshgrid(kx, ky)
    keep = (KX > 0) | ((KX == 0) & (KY > 0))
    rad = np.hypot(KX, KY)
    keep &= rad <= rmax + 1e-9
    flat = np.flatnonzero(keep.ravel())
    order = np.argsort(rad.ravel()[flat], kind="stable")
    flat = flat[order]
    return HalfPlane(
        box, KX.ravel()[flat], KY.ravel()[flat], rad.ravel()[flat], flat.astype(np.int64)
    )


def images_to_half_plane(images, plane: HalfPlane, batch: int = 512):
    """Centred real images (n, N, N) → their half-plane Fourier values (n, K) complex64.

    The phase origin is the central pixel (N/2, N/2), as for the projector.
    """
    xp, fft = backend.xp(), backend.fft()
    n = images.shape[0]
    out = xp.empty((n, plane.rfft_index.size), dtype=xp.complex64)
    idx = backend.asarray(plane.rfft_index)
    for start in range(0, n, batch):
        block = backend.asarray(images[start : start + batch], dtype=xp.float32)
        f = fft.rfft2(fft.ifftshift(block, axes=(-2, -1)), axes=(-2, -1))
        out[start : start + batch] = f.reshape(f.shape[0], -1)[:, idx]
    return out


def half_plane_to_images(values, plane: HalfPlane):
    """Inverse of :func:`images_to_half_plane` (missing pixels are zero): (n, K) → (n, N, N)."""
    xp, fft = backend.xp(), backend.fft()
    n, k = values.shape
    box = plane.box
    full = xp.zeros((n, box * (box // 2 + 1)), dtype=xp.complex64)
    full[:, backend.asarray(plane.rfft_index[:k])] = values
    full = full.reshape(n, box, box // 2 + 1)
    # kx == 0 column: fill the Friedel mates (ky < 0) from ky > 0.
    col = full[:, :, 0]
    col[:, 1:] = col[:, 1:] + xp.conj(col[:, 1:][:, ::-1])
    full[:, :, 0] = col
    img = fft.irfft2(full, s=(box, box), axes=(-2, -1))
    return fft.fftshift(img, axes=(-2, -1)).astype(xp.float32)


def gridding_correction(box: int, ndim: int = 3):
    """Real-space sinc² apodisation of trilinear interpolation on a ×2 padded grid.

    Trilinear interpolation in Fourier space multiplies the real-space object by
    ∏ sinc²(x/(2N)); divide by this array (shape (N,)*ndim) to undo it.
    """
    xp = backend.xp()
    x = (xp.arange(box) - box // 2) / (PAD * box)
    s = xp.sinc(x) ** 2
    out = s
    for _ in range(ndim - 1):
        out = out[..., None] * s
    return out.astype(xp.float32)


def pad_fourier(volume, correct: bool = True):
    """Centred Fourier transform of a real volume (N,)*d padded ×2: shape (2N,)*d, complex64.

    With ``correct`` the volume is first divided by the gridding correction so that
    trilinear slices of the result match the true projections.
    """
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    box, ndim = vol.shape[0], vol.ndim
    if correct:
        vol = vol / gridding_correction(box, ndim)
    lo = box // 2
    padded = xp.zeros((PAD * box,) * ndim, dtype=xp.float32)
    padded[(slice(lo, lo + box),) * ndim] = vol
    axes = tuple(range(ndim))
    f = fft.fftshift(fft.fftn(fft.ifftshift(padded, axes=axes), axes=axes), axes=axes)
    return f.astype(xp.complex64)


def unpad_fourier(fgrid, box: int, correct: bool = True):
    """Inverse of :func:`pad_fourier` on a centred (2N,)*d grid → real (N,)*d volume."""
    xp, fft = backend.xp(), backend.fft()
    ndim = fgrid.ndim
    axes = tuple(range(ndim))
    real = fft.fftshift(fft.ifftn(fft.ifftshift(fgrid, axes=axes), axes=axes), axes=axes).real
    lo = box // 2
    vol = real[(slice(lo, lo + box),) * ndim].astype(xp.float32)
    if correct:
        vol = vol / gridding_correction(box, ndim)
    return vol


def _corners(coords, size: int):
    """Flat indices (…, 2^d) and trilinear weights (…, 2^d) of grid points around ``coords``.

    ``coords`` (…, d) in padded-grid units with the centre at 0, ordered (x, y[, z]);
    the grid array is indexed in reverse order ([z,] y, x).
    """
    xp = backend.xp()
    d = coords.shape[-1]
    g = coords + size // 2
    g = xp.clip(g, 0, size - 1.001)
    base = xp.floor(g)
    frac = (g - base).astype(xp.float32)
    base = base.astype(xp.int64)
    idx = []
    wts = []
    for corner in range(2**d):
        flat = 0
        w = 1.0
        for axis in range(d):  # axis 0 = x (fastest varying)
            bit = (corner >> axis) & 1
            flat = flat + (base[..., axis] + bit) * (size**axis)
            w = w * (frac[..., axis] if bit else 1.0 - frac[..., axis])
        idx.append(flat)
        wts.append(w)
    return xp.stack(idx, -1), xp.stack(wts, -1)


def plane_coords(rotations, plane: HalfPlane, count: int):
    """Padded-grid 3D coordinates (R, K, 3) of the first ``count`` pixels for rotations (R, 3, 3)."""
    xp = backend.xp()
    k2 = xp.stack(
        [backend.asarray(plane.kx[:count]), backend.asarray(plane.ky[:count])], -1
    ).astype(xp.float32)
    rot = backend.asarray(rotations, dtype=xp.float32)
    # A.T @ (kx, ky, 0) = kx·A[0, :] + ky·A[1, :]
    return PAD * (
        k2[None, :, 0, None] * rot[:, None, 0, :] + k2[None, :, 1, None] * rot[:, None, 1, :]
    )


def _ndimage():
    if backend.device() == "gpu":
        import cupyx.scipy.ndimage as ndi
    else:
        import scipy.ndimage as ndi
    return ndi


def split_parts(fgrid) -> tuple:
    """The real and imaginary parts of a complex grid as contiguous arrays, for many
    :func:`gather` calls on the same grid (sampling a contiguous array is faster)."""
    xp = backend.xp()
    return xp.ascontiguousarray(fgrid.real), xp.ascontiguousarray(fgrid.imag)


def gather(fgrid, coords):
    """Trilinear (or bilinear) samples of a centred Fourier grid at padded coordinates (…, d).

    ``coords`` last axis is (x, y[, z]) with the grid centre at 0; outside the grid → 0.
    ``fgrid``: a complex grid, or its (real, imaginary) parts (:func:`split_parts`).
    """
    xp = backend.xp()
    ndi = _ndimage()
    d = coords.shape[-1]
    real, imag = fgrid if isinstance(fgrid, tuple) else (fgrid.real, fgrid.imag)
    centre = real.shape[0] // 2
    pts = xp.stack([coords[..., axis] + centre for axis in range(d - 1, -1, -1)], 0)
    pts = pts.reshape(d, -1)
    re = ndi.map_coordinates(real, pts, order=1, mode="constant", cval=0.0, prefilter=False)
    im = ndi.map_coordinates(imag, pts, order=1, mode="constant", cval=0.0, prefilter=False)
    return (re + 1j * im).astype(xp.complex64).reshape(coords.shape[:-1])


def scatter(shape, coords, values, weights=None):
    """Trilinear insertion: returns (data grid, weight grid) of ``shape``.

    ``values`` (complex, …) are spread onto the 2^d neighbours of ``coords``;
    ``weights`` (real, …) likewise when given (else the weight grid is None).
    """
    xp = backend.xp()
    idx, w = _corners(coords, shape[0])
    size = int(np.prod(shape))
    idx = idx.reshape(-1)
    vw = values[..., None] * w
    # each part summed in float64 and rounded to float32 (no complex128 grid in between)
    data = xp.empty(size, dtype=xp.complex64)
    data.real = xp.bincount(idx, weights=vw.real.reshape(-1).astype(xp.float64), minlength=size)
    data.imag = xp.bincount(idx, weights=vw.imag.reshape(-1).astype(xp.float64), minlength=size)
    data = data.reshape(shape)
    wgrid = None
    if weights is not None:
        ww = (weights[..., None] * w).reshape(-1).astype(xp.float64)
        wgrid = xp.bincount(idx, weights=ww, minlength=size).reshape(shape).astype(xp.float32)
    return data, wgrid


def hermitian_fill(grid, conj: bool = True):
    """G(k) + conj(G(−k)) on a centred even grid (undoes half-plane insertion)."""
    xp = backend.xp()
    flipped = grid
    for axis in range(grid.ndim):
        flipped = xp.roll(xp.flip(flipped, axis=axis), 1, axis=axis)
    return grid + (xp.conj(flipped) if conj else flipped)


def project(fgrid, rotations, plane: HalfPlane, count: int):
    """Half-plane Fourier values (R, K) of projections of the padded map ``fgrid`` for rotations (R, 3, 3)."""
    if backend.device() == "cpu":
        return _project_cpu(fgrid, np.asarray(rotations, dtype=np.float32), plane, count)
    return gather(fgrid, plane_coords(rotations, plane, count)).astype(backend.xp().complex64)


def _project_cpu(fgrid, rotations: np.ndarray, plane: HalfPlane, count: int, batch: int = 256):
    """:func:`project` on CPU: trilinear samples taken from the flat complex grid directly
    (the same values as :func:`gather`, ~5× less CPU than two ``map_coordinates`` calls
    on its real and imaginary parts), ``batch`` rotations at a time."""
    size = fgrid.shape[0]
    flat = np.ascontiguousarray(fgrid).reshape(-1)
    kx = PAD * plane.kx[:count].astype(np.float32)
    ky = PAD * plane.ky[:count].astype(np.float32)
    top = np.float32(size - 1.001)
    s1, s2 = size, size * size
    out = np.empty((len(rotations), count), dtype=np.complex64)
    for start in range(0, len(rotations), batch):
        r = rotations[start : start + batch]
        # grid position (x, y, z) of A.T @ (kx, ky, 0) = kx·A[0, :] + ky·A[1, :]
        axes = []
        for axis in range(3):
            g = kx[None] * r[:, 0, axis, None] + ky[None] * r[:, 1, axis, None]
            np.clip(g + np.float32(size // 2), 0, top, out=g)
            axes.append(g)
        x, y, z = axes
        bx, by, bz = np.floor(x), np.floor(y), np.floor(z)
        fx, fy, fz = x - bx, y - by, z - bz
        i0 = (bz.astype(np.int64) * size + by.astype(np.int64)) * size + bx.astype(np.int64)
        gx, gy = 1 - fx, 1 - fy
        lo = (flat[i0] * gx + flat[i0 + 1] * fx) * gy
        lo += (flat[i0 + s1] * gx + flat[i0 + s1 + 1] * fx) * fy
        hi = (flat[i0 + s2] * gx + flat[i0 + s2 + 1] * fx) * gy
        hi += (flat[i0 + s2 + s1] * gx + flat[i0 + s2 + s1 + 1] * fx) * fy
        out[start : start + batch] = lo * (1 - fz) + hi * fz
    return out


def shift_phases(shifts_px, plane: HalfPlane, count: int):
    """exp(+2πi k·s/N) (S, K): multiplying an image's values by it moves the image by −s pixels.

    ``shifts_px`` (S, 2) = (x, y) in pixels. An image whose particle sits at centre + s
    is re-centred by these phases.
    """
    xp = backend.xp()
    s = backend.asarray(shifts_px, dtype=xp.float32).reshape(-1, 2)
    kx = backend.asarray(plane.kx[:count], dtype=xp.float32)
    ky = backend.asarray(plane.ky[:count], dtype=xp.float32)
    arg = (2.0 * np.pi / plane.box) * (s[:, 0, None] * kx[None] + s[:, 1, None] * ky[None])
    return (xp.cos(arg) + 1j * xp.sin(arg)).astype(xp.complex64)
