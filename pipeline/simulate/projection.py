"""Real-space projections (line integrals) of a map, RELION pose convention.

The projection of pose A (:func:`pipeline.geometry.euler_to_matrix`) is the map rotated by A
and summed along z: image(x, y) = Σ_z V(Aᵀ·(x, y, z)) · Δz, with (x, y, z) measured from the
box centre (voxel ``box // 2``) in pixels and V sampled by trilinear interpolation. Values are
line integrals in (map units)·Å, e.g. V·Å for a potential in volts.

This is deliberately a real-space ray sum, computed independently of any Fourier projector,
so reconstruction code can be validated against it without sharing its approximations.
Only the ball that holds the particle (the map's support) is sampled, so the cost is about
(4/3)π·r³ samples per image.
"""

from __future__ import annotations

import functools

import numpy as np

from pipeline import backend


def support_radius_px(volume: np.ndarray, threshold: float = 0.01) -> float:
    """Radius (pixels, from the centre voxel) outside which |V| < ``threshold``·max|V|."""
    n = volume.shape[0]
    c = n // 2
    z, y, x = np.ogrid[:n, :n, :n]
    r = np.sqrt((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2)
    magnitude = np.abs(np.asarray(volume))
    peak = magnitude.max()
    if peak == 0:
        return 1.0
    return float(r[magnitude > threshold * peak].max()) + 1.5


@functools.lru_cache(maxsize=8)
def _ray_samples(radius_px: float):
    """Integer pixel offsets (u, v) in the disk and the z samples of the ball along each ray."""
    rmax = int(np.ceil(radius_px))
    u, v = np.meshgrid(np.arange(-rmax, rmax + 1), np.arange(-rmax, rmax + 1), indexing="xy")
    u, v = u.ravel(), v.ravel()
    inside = u * u + v * v <= radius_px**2
    u, v = u[inside], v[inside]
    half = np.floor(np.sqrt(np.maximum(radius_px**2 - u * u - v * v, 0.0))).astype(int)
    counts = 2 * half + 1
    ray = np.repeat(np.arange(u.size), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    z = np.arange(ray.size) - start - np.repeat(half, counts)
    points = np.stack([u[ray], v[ray], z], axis=0).astype(np.float32)  # (3, m) x, y, z
    return u, v, ray, points


def project_into(
    canvas: np.ndarray,
    volume: np.ndarray,
    rotation: np.ndarray,
    centre_xy_px: tuple[float, float],
    pixel_size_A: float,
    *,
    radius_px: float | None = None,
    scale: float = 1.0,
) -> None:
    """Add ``scale`` × the projection of ``volume`` at pose ``rotation`` into ``canvas``.

    The particle centre (the map's centre voxel) lands at ``centre_xy_px`` = (x=column,
    y=row) of the canvas, sub-pixel positions exact (the rays are offset, not the image
    interpolated). Parts falling outside the canvas are dropped. numpy on CPU.
    """
    from scipy import ndimage

    n = volume.shape[0]
    r = support_radius_px(volume) if radius_px is None else radius_px
    u, v, ray, points = _ray_samples(round(float(r), 1))
    cx, cy = centre_xy_px
    ix, iy = int(np.round(cx)), int(np.round(cy))
    fx, fy = cx - ix, cy - iy
    local = points.copy()
    local[0] -= fx
    local[1] -= fy
    coords = np.asarray(rotation, dtype=np.float32).T @ local  # map (x, y, z) from centre
    coords += n // 2
    values = ndimage.map_coordinates(
        volume, coords[::-1], order=1, mode="constant", cval=0.0, prefilter=False
    )
    sums = np.bincount(ray, weights=values, minlength=u.size) * (pixel_size_A * scale)
    px, py = u + ix, v + iy
    ny, nx = canvas.shape
    keep = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    np.add.at(canvas, (py[keep], px[keep]), sums[keep].astype(canvas.dtype))


def project(
    volume: np.ndarray,
    rotations: np.ndarray,
    pixel_size_A: float,
    shifts_A: np.ndarray | None = None,
    *,
    method: str = "real",
    batch: int = 64,
) -> np.ndarray:
    """Projections of ``volume`` (z, y, x) at poses ``rotations`` (n, 3, 3).

    Returns (n, box, box) float32 line integrals (map units × Å) as a numpy array. RELION
    convention: pose A rotates map coordinates into image coordinates; the map's centre
    voxel projects onto pixel (box//2, box//2). ``shifts_A`` (n, 2) are RELION
    ``rlnOriginXAngst/YAngst``: the shift that re-centres the particle, so the particle
    centre lands at ``box//2 − shift/pixel_size_A`` (x = column, y = row); sub-pixel exact.

    ``method="real"`` (default): trilinear ray sums in real space (independent of any
    Fourier projector; ~0.1 s per 96-pixel image). ``method="fourier"``: central slices of
    the 2×-padded, gridding-corrected 3D FFT (:class:`FourierProjector`; ~100× faster, agrees
    with the real-space sums to correlation > 0.99; runs on the active backend device).
    """
    volume_np = np.ascontiguousarray(backend.to_numpy(volume), dtype=np.float32)
    if volume_np.ndim != 3 or len(set(volume_np.shape)) != 1:
        raise ValueError(f"volume must be a cubic 3D array (got shape {volume_np.shape})")
    if not pixel_size_A > 0:
        raise ValueError(f"pixel size must be positive (got {pixel_size_A} Å)")
    rotations = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    n_img = rotations.shape[0]
    if shifts_A is None:
        shifts_A = np.zeros((n_img, 2))
    shifts_A = np.asarray(shifts_A, dtype=np.float64).reshape(n_img, 2)
    box = volume_np.shape[0]
    if method == "fourier":
        projector = FourierProjector(volume_np)
        out = np.empty((n_img, box, box), dtype=np.float32)
        for start in range(0, n_img, batch):
            sl = slice(start, start + batch)
            out[sl] = backend.to_numpy(
                projector.project(rotations[sl], -shifts_A[sl] / pixel_size_A, pixel_size_A)
            )
        return out
    if method != "real":
        raise ValueError(f"unknown projection method {method!r} (use real or fourier)")
    radius = support_radius_px(volume_np)
    out = np.zeros((n_img, box, box), dtype=np.float32)
    for i in range(n_img):
        centre = (
            box // 2 - shifts_A[i, 0] / pixel_size_A,
            box // 2 - shifts_A[i, 1] / pixel_size_A,
        )
        project_into(out[i], volume_np, rotations[i], centre, pixel_size_A, radius_px=radius)
    return out


class FourierProjector:
    """Central-slice projector of one map (Fourier slice theorem), numpy or CuPy.

    The map is divided by the trilinear-interpolation apodisation sinc²(x/N)·sinc²(y/N)·
    sinc²(z/N) (gridding correction), zero-padded to N = 2·box and Fourier transformed once.
    Each image is the inverse 2D FFT of the slice at frequencies Aᵀ·(kx, ky, 0), sampled by
    trilinear interpolation inside the Nyquist disk of the original sampling, cropped to box.
    """

    def __init__(self, volume: np.ndarray):
        xp, fft = backend.xp(), backend.fft()
        n = volume.shape[0]
        big = 2 * n
        c = np.arange(n) - n // 2
        apod = np.sinc(c / big) ** 2
        corrected = np.asarray(volume, dtype=np.float32) / (
            apod[:, None, None] * apod[None, :, None] * apod[None, None, :]
        ).astype(np.float32)
        padded = xp.zeros((big, big, big), dtype=xp.float32)
        lo = big // 2 - n // 2
        padded[lo : lo + n, lo : lo + n, lo : lo + n] = xp.asarray(corrected)
        self.box = n
        self.size = big
        # half spectrum (x ≥ 0); F(−k) = conj F(k) gives the rest
        self.spectrum = fft.rfftn(fft.ifftshift(padded)).astype(xp.complex64)

    def project(self, rotations: np.ndarray, shifts_px: np.ndarray, pixel_size_A: float):
        """(m, box, box) float32 projections on the active device; ``shifts_px`` (m, 2) move
        the particle by (+dx, +dy) pixels (content at the centre lands at box//2 + shift)."""
        xp, fft = backend.xp(), backend.fft()
        big, n = self.size, self.box
        rot = xp.asarray(np.asarray(rotations, dtype=np.float32).reshape(-1, 3, 3))
        shifts = xp.asarray(np.asarray(shifts_px, dtype=np.float32).reshape(-1, 2))
        m = rot.shape[0]
        kx = xp.arange(big // 2 + 1, dtype=xp.float32)[None, :]
        ky = xp.fft.fftfreq(big, d=1.0 / big).astype(xp.float32)[:, None]
        kx = xp.broadcast_to(kx, (big, big // 2 + 1)).ravel()
        ky = xp.broadcast_to(ky, (big, big // 2 + 1)).ravel()
        inside = xp.nonzero(kx * kx + ky * ky <= (big / 2) ** 2)[0]  # flat indices
        kxi, kyi = kx[inside], ky[inside]
        # 3D frequency (x, y, z) = Aᵀ (kx, ky, 0): rows of A give the map axes
        fx = rot[:, 0, 0, None] * kxi + rot[:, 1, 0, None] * kyi
        fy = rot[:, 0, 1, None] * kxi + rot[:, 1, 1, None] * kyi
        fz = rot[:, 0, 2, None] * kxi + rot[:, 1, 2, None] * kyi
        flip = fx < 0
        sign = xp.where(flip, -1.0, 1.0).astype(xp.float32)
        values = _trilinear_half(self.spectrum, fz * sign, fy * sign, fx * sign, big)
        values = xp.where(flip, xp.conj(values), values)
        phase = -2 * np.pi * (shifts[:, 0, None] * kxi + shifts[:, 1, None] * kyi) / big
        values = values * (xp.cos(phase) + 1j * xp.sin(phase)).astype(xp.complex64)
        half = xp.zeros((m, big, big // 2 + 1), dtype=xp.complex64)
        half.reshape(m, -1)[:, inside] = values
        images = fft.irfft2(half, s=(big, big), axes=(-2, -1))
        images = fft.fftshift(images, axes=(-2, -1))
        lo = big // 2 - n // 2
        return (images[:, lo : lo + n, lo : lo + n] * pixel_size_A).astype(xp.float32)


def _trilinear_half(grid, z, y, x, size: int):
    """Trilinear interpolation of a half spectrum (size, size, size//2 + 1), x ≥ 0, periodic
    in z and y, at fractional frequency indices (z, y, x)."""
    xp = backend.xp()
    z0, y0, x0 = xp.floor(z), xp.floor(y), xp.floor(x)
    dz, dy, dx = z - z0, y - y0, x - x0
    z0 = z0.astype(xp.int64) % size
    y0 = y0.astype(xp.int64) % size
    x0 = x0.astype(xp.int64)
    half = size // 2 + 1
    z1, y1 = (z0 + 1) % size, (y0 + 1) % size
    x1 = xp.minimum(x0 + 1, half - 1)  # x = size/2 only at the Nyquist edge (weight 0 beyond)
    flat = grid.reshape(-1)
    out = 0
    for zi, wz in ((z0, 1 - dz), (z1, dz)):
        for yi, wy in ((y0, 1 - dy), (y1, dy)):
            base = (zi * size + yi) * half
            out = out + flat[base + x0] * (wz * wy * (1 - dx)) + flat[base + x1] * (wz * wy * dx)
    return out
