"""Gold-standard 3D refinement.

The particles are split into two random halves, each refined against its own map
(started from the same low-passed initial model, e.g. 30 Å) so that the half-map
FSC is unbiased. The first ``global_iterations`` iterations search a uniform SO(3)
grid restricted to the asymmetric unit (all shifts in iteration 0, ±1 pixel around
the current origin later), each followed by local moves; later iterations are local
pattern searches (3×3×3 rotation neighbourhood × 3×3 shifts) with a step that
shrinks with the resolution. The search uses Fourier pixels up to the current
half-map resolution plus a margin, but marches there: its radius grows by at most
:func:`march_px` per iteration. Reconstructions always use every pixel with Wiener
regularisation from the previous FSC. Stops when the resolution no longer improves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.backproject import Backprojector
from pipeline.reconstruction.fsc import fsc as fsc_curve
from pipeline.reconstruction.fsc import resolution_at
from pipeline.reconstruction.symmetry import asymmetric_grid


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


def build_workspace(images, ctf_params, pixel_size_A: float, symmetry: str = "C1") -> Workspace:
    """Fourier-transform normalised images (n, N, N) and compute their CTFs and noise weights."""
    from pipeline.reconstruction.particles import half_plane_ctfs, noise_power

    box = images.shape[-1]
    plane = fourier.half_plane(box)
    values = fourier.images_to_half_plane(images, plane)
    ctf = half_plane_ctfs(ctf_params, plane, pixel_size_A)
    sigma2 = noise_power(values, plane)
    xp = backend.xp()
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


def soft_sphere(box: int, radius_px: float, edge_px: float = 4.0):
    """Spherical mask with a raised-cosine edge (float32 on device)."""
    xp = backend.xp()
    g = xp.arange(box, dtype=xp.float32) - box // 2
    r = xp.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    t = xp.clip((r - radius_px) / edge_px, 0.0, 1.0)
    return (0.5 + 0.5 * xp.cos(np.pi * t)).astype(xp.float32)


def lowpass(volume, resolution_A: float, pixel_size_A: float, width_px: float = 2.0):
    """Raised-cosine low-pass filter of a volume at ``resolution_A``."""
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


def angular_step_deg(radius_px: float, particle_radius_px: float) -> float:
    """Orientation step (degrees) that moves the outermost used Fourier pixel by ~1 pixel."""
    del particle_radius_px
    return math.degrees(1.0 / max(radius_px, 1.0))


#: The search radius grows per iteration by at most this fraction of itself (or
#: 3 Fourier pixels, whichever is more): :func:`march_px`.
MARCH_FRACTION = 0.2

#: Iterations after the search has marched to Nyquist, at most (the default cap).
SETTLE_ITERATIONS = 3


def march_px(radius_px: float) -> float:
    """How far (Fourier pixels) the search radius may grow in one iteration: 3 pixels or
    ``MARCH_FRACTION`` of the radius, whichever is more.

    The half-map FSC alone would jump from 30 Å to Nyquist after one iteration for a
    near-spherical particle such as apoferritin: its orientation-independent radial
    profile agrees between the halves at every resolution, whether or not the poses are
    right. Searching orientations at Nyquist with poses that are right only at 30 Å
    led refinement into a wrong map both halves reproduce (22.8 Å against the truth on
    the demo's particles); marching the search resolution led the same start to 10.4 Å
    (BENCHMARKS.md, issue 10).
    """
    return max(3.0, MARCH_FRACTION * radius_px)


def default_iterations(box: int, pixel_size_A: float, initial_resolution_A: float) -> int:
    """Iterations for the search to march from ``initial_resolution_A`` (Å) to Nyquist,
    plus ``SETTLE_ITERATIONS``: e.g. 11 for a box of 64 at 3 Å/pixel from 30 Å, 19 for
    256 at 0.83 Å/pixel. Refinement stops earlier once the resolution stops improving."""
    radius, nyquist = box * pixel_size_A / initial_resolution_A, box // 2 - 1
    steps = 0
    while radius < nyquist:
        radius += march_px(radius)
        steps += 1
    return 1 + steps + SETTLE_ITERATIONS


@dataclass
class RefineResult:
    rotations: np.ndarray  # (n, 3, 3)
    origins_px: np.ndarray  # (n, 2)
    halves: np.ndarray  # (n,) 0 or 1
    half_maps: tuple  # two (N, N, N) numpy float32
    fsc: np.ndarray
    resolution_A: float
    history: list = field(default_factory=list)

    @property
    def average_map(self) -> np.ndarray:
        """The two half-maps averaged (N, N, N) numpy float32."""
        return 0.5 * (self.half_maps[0] + self.half_maps[1])


def refine(
    ws: Workspace,
    initial_volume: np.ndarray,
    rng: np.random.Generator,
    *,
    subset: np.ndarray | None = None,
    initial_resolution_A: float = 30.0,
    global_step_deg: float = 7.5,
    max_shift_A: float | None = None,
    max_iterations: int | None = None,
    global_iterations: int = 3,
    mask_radius_frac: float = 0.45,
    progress: Callable[[str], None] | None = None,
    callback: Callable[[int, list, np.ndarray, np.ndarray], None] | None = None,
) -> RefineResult:
    """Gold-standard refinement of particles ``subset`` (default: all) from ``initial_volume``.

    ``max_iterations`` caps the iterations (default :func:`default_iterations`); it stops
    earlier when the half-map resolution no longer improves once the search has caught up.
    """
    xp = backend.xp()
    idx_all = np.arange(ws.n) if subset is None else np.asarray(subset)
    halves = np.zeros(ws.n, dtype=np.int64)
    perm = rng.permutation(idx_all)
    halves[perm[len(perm) // 2 :]] = 1
    groups = [np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2 :])]
    box, pix = ws.box, ws.pixel_size_A
    if max_shift_A is None:
        max_shift_A = 0.08 * box * pix
    if max_iterations is None:
        max_iterations = default_iterations(box, pix, initial_resolution_A)
    mask = soft_sphere(box, mask_radius_frac * box)
    start = lowpass(initial_volume, initial_resolution_A, pix)
    maps = [start, start]
    rotations = np.tile(np.eye(3), (ws.n, 1, 1))
    origins = np.zeros((ws.n, 2))
    res = initial_resolution_A
    curve = None
    history = []
    best_res = np.inf
    stall = 0
    radius = ws.radius_px(res)
    for it in range(max_iterations):
        t0 = time.perf_counter()
        marching = False
        if it > 0:
            wanted = min(ws.radius_px(res) + 3, box // 2 - 1)
            marching = wanted > radius + march_px(radius)
            radius = min(wanted, radius + march_px(radius))
        search_res = ws.resolution_A(radius)
        data = ws.search_data(search_res)
        local_only = it >= global_iterations
        step = angular_step_deg(radius, box / 2)
        for h, idx in enumerate(groups):
            fgrid = fourier.pad_fourier(maps[h])
            if not local_only:
                gstep = max(global_step_deg, min(2 * global_step_deg, step))
                grid = asymmetric_grid(search.so3_grid(gstep), ws.symmetry)
                refs = fourier.project(fgrid, grid, ws.plane, data.count)
                if it == 0:
                    shift_step = max(1.0, min(search_res / (4 * pix), 3.0))
                    shifts = search.shift_grid(max_shift_A / pix, shift_step)
                    best, org, _ = search.global_search(refs, data, idx, shifts)
                else:
                    shift_step = 1.0
                    shifts = search.shift_grid(1.0, 1.0)
                    best, org, _ = search.global_search(refs, data, idx, shifts, origins[idx])
                rotations[idx] = grid[best]
                origins[idx] = org
                del refs
                steps = [gstep / 2, gstep / 4, gstep / 4]
                shift_steps = [shift_step / 2, shift_step / 4, shift_step / 4]
            else:
                steps = [2 * step, step, step, step / 2]
                shift_steps = [1.0, 0.5, 0.5, 0.25]
            for step_deg, sstep in zip(steps, shift_steps, strict=True):
                r, o, _ = search.local_search(
                    fgrid, data, idx, rotations[idx], origins[idx], step_deg, sstep
                )
                rotations[idx], origins[idx] = r, o
            # keep origins inside the search range
            origins[idx] = np.clip(origins[idx], -max_shift_A / pix, max_shift_A / pix)
        new_maps = []
        for idx in groups:
            bp = backproject_particles(ws, idx, rotations, origins)
            vol = bp.reconstruct(box // 2 - 1, fsc=curve, ssnr_default=1.0)
            new_maps.append(vol)
        curve = fsc_curve(new_maps[0] * mask, new_maps[1] * mask)
        res = resolution_at(curve, box, pix, 0.143)
        maps = new_maps
        if callback:
            callback(it, maps, rotations, origins)
        elapsed = time.perf_counter() - t0
        history.append(
            {
                "iteration": it,
                "search_resolution_A": search_res,
                "resolution_A": res,
                "seconds": elapsed,
            }
        )
        if progress:
            progress(f"refine iteration {it}: {res:.2f} Å ({elapsed:.1f} s)")
        if res < best_res - 0.05 * best_res / 10 or marching:
            best_res = min(best_res, res)
            stall = 0
        else:
            stall += 1
            if stall >= 2 and it >= global_iterations + 1:
                break
    del xp
    return RefineResult(
        rotations,
        origins,
        halves,
        (backend.to_numpy(maps[0]), backend.to_numpy(maps[1])),
        curve,
        res,
        history,
    )


def particle_fit(ws: Workspace, result: RefineResult, subset: np.ndarray | None = None) -> float:
    """How well the particles ``subset`` fit a refinement: the mean whitened correlation of
    each particle with the projection of the refined map (both halves averaged) at its own
    pose, polished locally, out to 3 pixels' resolution (e.g. 9 Å at 3 Å/pixel). Higher
    is better.

    Used to choose between refinements from different ab-initio runs: a wrong map that
    both half-maps reproduce (their FSC cannot see an error they share) is fitted clearly
    worse by the particles (on the demo's apoferritin particles 560 against 701 for the
    right map; BENCHMARKS.md, issue 10).
    """
    idx = np.arange(ws.n) if subset is None else np.asarray(subset)
    data = ws.search_data(3.0 * ws.pixel_size_A)
    fgrid = fourier.pad_fourier(result.average_map)
    _, _, scores = search.local_search(
        fgrid, data, idx, result.rotations[idx], result.origins_px[idx], 0.25, 0.1
    )
    return float(np.mean(scores))
