"""Particles ready for alignment: half-plane Fourier values, CTFs and noise weights,
at the full box or Fourier-cropped to the box a stage searches in.

:func:`build_workspace` reads the images in chunks (from the stacks on disk through
:class:`pipeline.reconstruction.particles.ImageSource`, or any array), so the real-space
images are never all in memory. The half-plane values and CTFs stay in memory (resident)
while they fit ``resident_MB``; beyond it they are :class:`StreamedStack` s, computed
again from the images on disk for each batch a search or back-projection asks for, so
memory stays bounded whatever the particle count (a box the budget holds is made
resident when a stage crops to it). :meth:`Workspace.cropped` gives the same particles at a
smaller box (larger pixel), as RELION and cryoSPARC bin for 2D classification and
ab-initio: the Fourier pixels up to the smaller box's N/2 − 1, scaled by (n/N)² so that
images keep their real-space intensities (:func:`grids.change_box` scales maps alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.backproject import Backprojector

#: default memory (MB) for the resident half-plane values and CTFs of one workspace
RESIDENT_MB = 1000.0


@dataclass
class ParticleSource:
    """The particles a streamed workspace reads: ``images`` (sliceable along the first
    axis, shape (n, N, N), e.g. :class:`particles.ImageSource`), their CTF parameters and
    pixel size (Å), read ``chunk`` images at a time."""

    images: object
    ctf_params: list
    pixel_size_A: float
    chunk: int = 512

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def rows_per_read(self) -> int:
        """Images read at a time: ``chunk``, fewer for large boxes (≤ 64 MB of images)."""
        return int(max(8, min(self.chunk, 64e6 // (4 * self.box * self.box))))

    @property
    def box(self) -> int:
        return int(self.images.shape[-1])

    def values(self, rows: np.ndarray, plane: fourier.HalfPlane, count: int) -> np.ndarray:
        """Half-plane values (m, count) complex64 of images ``rows`` Fourier-cropped to
        ``plane``'s box (scaled by (n/N)², :meth:`Workspace.cropped`); numpy."""
        full = self.box
        index = (plane.ky[:count] % full) * (full // 2 + 1) + plane.kx[:count]
        scale = np.float32((plane.box / full) ** 2)
        out = np.empty((len(rows), count), dtype=np.complex64)
        for start in range(0, len(rows), self.rows_per_read):
            block = np.asarray(self.images[rows[start : start + self.rows_per_read]])
            f = _rfft2(np.fft.ifftshift(block, axes=(-2, -1)))
            out[start : start + len(block)] = f.reshape(len(block), -1)[:, index] * scale
        return out

    def ctf(self, rows: np.ndarray, plane: fourier.HalfPlane, count: int) -> np.ndarray:
        """CTFs (m, count) float32 of particles ``rows`` on ``plane``'s pixels; numpy."""
        from pipeline.reconstruction.particles import half_plane_ctfs

        pix = self.pixel_size_A * self.box / plane.box
        params = [self.ctf_params[int(i)] for i in rows]
        return backend.to_numpy(half_plane_ctfs(params, plane, pix, count))


def _rfft2(images: np.ndarray) -> np.ndarray:
    """rfft2 over the last two axes in single precision (scipy.fft keeps float32)."""
    import scipy.fft

    return scipy.fft.rfft2(images.astype(np.float32, copy=False), axes=(-2, -1))


class StreamedStack:
    """Half-plane values (``kind`` "values", complex64) or CTFs ("ctf", float32) of every
    particle at ``plane``'s box, (n, K) like the resident arrays, computed from the
    images on disk for the rows each ``[rows]`` or ``[rows, :count]`` asks for."""

    def __init__(self, source: ParticleSource, plane: fourier.HalfPlane, kind: str):
        self.source, self.plane, self.kind = source, plane, kind
        self.shape = (source.n, plane.kx.size)
        self.dtype = np.complex64 if kind == "values" else np.float32

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, slice):
            rows = np.arange(self.shape[0])[rows]
        rows = np.atleast_1d(backend.to_numpy(rows)).astype(np.int64)
        if isinstance(cols, slice) and cols.start is None and cols.step is None:
            count = self.shape[1] if cols.stop is None else min(cols.stop, self.shape[1])
            cols = slice(None)
        else:
            count = self.shape[1]
        unique, inverse = np.unique(rows, return_inverse=True)
        fetch = self.source.values if self.kind == "values" else self.source.ctf
        out = fetch(unique, self.plane, count)
        if len(unique) != len(rows) or (unique != rows).any():
            out = out[inverse]
        return backend.asarray(out[:, cols])


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
    #: where streamed values and CTFs come from (None: resident arrays only)
    source: ParticleSource | None = None
    #: memory (MB) up to which a cropped workspace is made resident
    resident_MB: float = RESIDENT_MB
    _crop_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def streamed(self) -> bool:
        return isinstance(self.values, StreamedStack)

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
        cached = self._crop_cache.get(box)
        if cached is not None:
            return cached
        self._crop_cache.clear()  # one cropped workspace at a time: bounded memory
        small = fourier.half_plane(box)
        lut = np.full((self.box, self.box // 2 + 1), -1, dtype=np.int64)
        lut[self.plane.ky % self.box, self.plane.kx] = np.arange(self.plane.kx.size)
        index = lut[small.ky % self.box, small.kx]
        assert (index >= 0).all()
        dev = backend.asarray(index)
        scale = (box / self.box) ** 2
        if self.streamed:
            values, ctf = _from_source(self.source, small, self.resident_MB)
        else:
            values, ctf = self.values[:, dev] * np.float32(scale), self.ctf[:, dev]
        out = Workspace(
            values,
            ctf,
            self.noise_inv[dev],
            small,
            self.pixel_size_A * self.box / box,
            self.symmetry,
            self.noise_scale / scale**2,
            self.source,
            self.resident_MB,
        )
        self._crop_cache[box] = out
        return out

    def for_resolution(self, resolution_A: float, margin: float = 1.25) -> Workspace:
        """:meth:`cropped` to the smallest box that holds ``resolution_A`` with a margin
        (:func:`grids.crop_box`)."""
        from pipeline.reconstruction.grids import crop_box

        return self.cropped(crop_box(self.radius_px(resolution_A), self.box, margin))


def resident_bytes(n: int, plane: fourier.HalfPlane) -> int:
    """Memory of ``n`` particles' resident half-plane values (complex64) and CTFs (float32)."""
    return 12 * n * int(plane.kx.size)


def _from_source(source: ParticleSource, plane: fourier.HalfPlane, resident_MB: float):
    """Values and CTFs of every particle at ``plane``'s box: resident arrays (read once,
    chunk by chunk) when they fit ``resident_MB``, else :class:`StreamedStack` s."""
    if resident_bytes(source.n, plane) > resident_MB * 1e6:
        return StreamedStack(source, plane, "values"), StreamedStack(source, plane, "ctf")
    xp = backend.xp()
    k = plane.kx.size
    values = xp.empty((source.n, k), dtype=xp.complex64)
    ctf = xp.empty((source.n, k), dtype=xp.float32)
    for start in range(0, source.n, source.chunk):
        rows = np.arange(start, min(source.n, start + source.chunk))
        values[rows[0] : rows[-1] + 1] = backend.asarray(source.values(rows, plane, k))
        ctf[rows[0] : rows[-1] + 1] = backend.asarray(source.ctf(rows, plane, k))
    return values, ctf


def build_workspace(
    images,
    ctf_params,
    pixel_size_A: float,
    symmetry: str = "C1",
    chunk: int = 512,
    progress: Callable[[float], None] | None = None,
    resident_MB: float = RESIDENT_MB,
) -> Workspace:
    """Fourier-transform normalised images (n, N, N) chunk by chunk and compute their
    CTFs and noise weights. ``images`` is anything sliceable along its first axis with a
    ``shape`` (an array, or a :class:`particles.ImageSource` reading from disk);
    ``progress`` receives the fraction done. The values and CTFs are kept in memory when
    they fit ``resident_MB`` (MB); otherwise one pass over the images measures the noise
    and the workspace streams (:class:`StreamedStack`)."""
    from pipeline.reconstruction.particles import half_plane_ctfs

    xp = backend.xp()
    n, box = images.shape[0], images.shape[-1]
    plane = fourier.half_plane(box)
    source = ParticleSource(images, list(ctf_params), pixel_size_A, chunk)
    resident = resident_bytes(n, plane) <= resident_MB * 1e6
    k = plane.rfft_index.size
    values = xp.empty((n, k), dtype=xp.complex64) if resident else None
    power = xp.zeros(k, dtype=xp.float64)  # Σ |X|² per pixel over particles
    step = source.rows_per_read
    for start in range(0, n, step):
        block = np.asarray(images[start : start + step], dtype=np.float32)
        chunk_values = fourier.images_to_half_plane(block, plane)
        power += xp.sum(xp.abs(chunk_values) ** 2, axis=0, dtype=xp.float64)
        if resident:
            values[start : start + len(block)] = chunk_values
        if progress:
            progress(min(n, start + step) / n)
    if resident:
        ctf = half_plane_ctfs(source.ctf_params, plane, pixel_size_A)
    else:
        values, ctf = StreamedStack(source, plane, "values"), StreamedStack(source, plane, "ctf")
    sigma2 = _shell_average(power / n, plane)
    noise_inv = (1.0 / xp.maximum(sigma2, 1e-12 * float(sigma2.max()))).astype(xp.float32)
    # normalise so that the weights average to one (keeps score magnitudes readable)
    scale = float(xp.mean(noise_inv))
    noise_inv = noise_inv / scale
    return Workspace(
        values, ctf, noise_inv, plane, pixel_size_A, symmetry, scale, source, resident_MB
    )


def _shell_average(power, plane: fourier.HalfPlane):
    """Mean over each integer shell of a per-pixel power (K,) → σ²(k) per pixel (float32)."""
    xp = backend.xp()
    shells = backend.asarray(plane.shells(plane.kx.size))
    m = int(shells.max()) + 1
    sums = xp.bincount(shells, weights=power, minlength=m)
    counts = xp.bincount(shells, minlength=m)
    return (sums / xp.maximum(counts, 1))[shells].astype(xp.float32)


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
    each scaled by ``weights`` (soft assignment; default 1). On CPU the batches are shared between
    ``--threads`` accumulators (threads; each its own grid while the ×2 padded grids
    take under 256 MB), summed at the end in a fixed order."""
    xp = backend.xp()

    def insert(bp: Backprojector, starts) -> Backprojector:
        for start in starts:
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

    starts = list(range(0, len(idx), batch))
    grid_MB = 12 * (fourier.PAD * ws.box) ** 3 / 1e6
    workers = search._workers() if grid_MB < 256 else 1
    workers = min(workers, len(starts))
    if workers <= 1:
        return insert(Backprojector(ws.box, ws.symmetry), starts)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        parts = list(
            pool.map(
                lambda g: insert(Backprojector(ws.box, ws.symmetry), starts[g::workers]),
                range(workers),
            )
        )
    for part in parts[1:]:
        parts[0].add(part)
    return parts[0]
