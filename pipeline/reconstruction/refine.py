"""Gold-standard 3D refinement.

The particles are split into two random halves, each refined against its own map
(started from its own ab-initio map, or from one shared low-passed initial model, e.g.
30 Å) so that the half-map FSC is unbiased. The first ``global_iterations`` iterations search a uniform SO(3)
grid restricted to the asymmetric unit (all shifts in iteration 0, ±1 pixel around
the current origin later), each followed by local moves; later iterations are local
pattern searches (3×3×3 rotation neighbourhood × 3×3 shifts) with a step that
shrinks with the resolution. The search uses Fourier pixels up to the current
half-map resolution plus a margin, but marches there: its radius grows by at most
:func:`march_px` per iteration. Reconstructions always use every pixel with Wiener
regularisation from the previous FSC; with ``top_k`` > 1 the global iterations'
reconstructions weight each particle's ``top_k`` best poses by their posterior
(marginalisation) instead of using its best pose only. Stops when the resolution no
longer improves; with ``keep_best`` it returns the iteration whose half-maps agreed best,
not the last: from the truth itself, hard poses at low SNR drift away from it as the
iterations go on (benchmarks/diagnose_pose_error.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.fsc import fsc as fsc_curve
from pipeline.reconstruction.fsc import resolution_at
from pipeline.reconstruction.grids import lowpass, soft_sphere
from pipeline.reconstruction.refine_pass import (
    GlobalStep,
    SoftPoses,
    align_and_backproject,
    used_poses,
)
from pipeline.reconstruction.refine_pass import soft_weights as pose_weights
from pipeline.reconstruction.symmetry import asymmetric_grid
from pipeline.reconstruction.workspace import (
    Workspace,
    backproject_particles,
    backproject_weighted,
    build_workspace,
    recentre,
)

__all__ = [
    "RefineResult",
    "Workspace",
    "backproject_particles",
    "backproject_weighted",
    "build_workspace",
    "lowpass",
    "particle_fit",
    "recentre",
    "refine",
    "soft_sphere",
]


def angular_step_deg(radius_px: float, particle_radius_px: float) -> float:
    """Orientation step (degrees) that moves the outermost used Fourier pixel by ~1 pixel."""
    del particle_radius_px
    return math.degrees(1.0 / max(radius_px, 1.0))


def march_px(radius_px: float, march_fraction: float = 0.2) -> float:
    """How far (Fourier pixels) the search radius may grow in one iteration: 3 pixels or
    ``march_fraction`` of the radius, whichever is more (:class:`RefineOptions`).

    The half-map FSC alone would jump from 30 Å to Nyquist after one iteration for a
    near-spherical particle such as apoferritin: its orientation-independent radial
    profile agrees between the halves at every resolution, whether or not the poses are
    right. Searching orientations at Nyquist with poses that are right only at 30 Å
    led refinement into a wrong map both halves reproduce (22.8 Å against the truth on
    the demo's particles); marching the search resolution led the same start to 10.4 Å
    (BENCHMARKS.md, issue 10).
    """
    return max(3.0, march_fraction * radius_px)


def default_iterations(
    box: int,
    pixel_size_A: float,
    initial_resolution_A: float,
    march_fraction: float = 0.2,
    settle_iterations: int = 3,
) -> int:
    """Iterations for the search to march from ``initial_resolution_A`` (Å) to Nyquist,
    plus ``settle_iterations``: e.g. 11 for a box of 64 at 3 Å/pixel from 30 Å, 19 for
    256 at 0.83 Å/pixel. Refinement stops earlier once the resolution stops improving."""
    radius, nyquist = box * pixel_size_A / initial_resolution_A, box // 2 - 1
    steps = 0
    while radius < nyquist:
        radius += march_px(radius, march_fraction)
        steps += 1
    return 1 + steps + settle_iterations


@dataclass
class RefineResult:
    rotations: np.ndarray  # (n, 3, 3)
    origins_px: np.ndarray  # (n, 2), pixels of the full box
    halves: np.ndarray  # (n,) 0 or 1
    half_maps: tuple  # two (N, N, N) numpy float32
    fsc: np.ndarray
    resolution_A: float
    history: list = field(default_factory=list)

    @property
    def average_map(self) -> np.ndarray:
        """The two half-maps averaged (N, N, N) numpy float32."""
        return 0.5 * (self.half_maps[0] + self.half_maps[1])


def split_halves(idx_all: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random gold-standard halves (n,) 0/1 of the particles ``idx_all`` (others 0)."""
    halves = np.zeros(n, dtype=np.int64)
    perm = rng.permutation(np.asarray(idx_all))
    halves[perm[len(perm) // 2 :]] = 1
    return halves


def _half_maps(ws: Workspace, groups, rotations, origins_px, curve, poses=None):
    """Reconstruct both halves at ``ws``'s box (``origins_px`` in ``ws``'s pixels).

    ``poses``: (rotations (n, k, 3, 3), origins (n, k, 2) in ``ws``'s pixels, weights
    (n, k)): each particle back-projected at its k poses weighted by their posterior
    (marginalisation over the poses, as RELION does) instead of at its best pose."""
    maps = []
    for idx in groups:
        if poses is None:
            bp = backproject_particles(ws, idx, rotations, origins_px)
        else:
            rot, org, w = (p[idx] for p in poses)
            rows, cols, w = used_poses(w)
            bp = backproject_weighted(ws, idx[rows], rot[rows, cols], org[rows, cols], w)
        maps.append(bp.reconstruct(ws.box // 2 - 1, fsc=curve, ssnr_default=1.0))
    return maps


@dataclass(frozen=True)
class RefineMask:
    """The refinement mask (:class:`options.RefineOptions` ``mask``…): ``kind`` "map" or
    "sphere"; lengths in Å, ``radius_frac`` of the box."""

    kind: str = "sphere"
    radius_frac: float = 0.45
    lowpass_A: float = 15.0
    threshold_frac: float = 0.1
    extend_A: float = 6.0
    edge_A: float = 6.0

    def __call__(self, maps, pixel_size_A: float):
        """The mask (N, N, N) float32 on device for half-maps ``maps`` (a pair) at
        ``pixel_size_A``: the soft sphere, times (kind "map") a soft mask of their
        average (dilated by at least 2 and edged by at least 3 pixels)."""
        from pipeline.reconstruction.postprocess import soft_mask

        box = maps[0].shape[0]
        sphere = soft_sphere(box, self.radius_frac * box)
        if self.kind == "sphere":
            return sphere
        if self.kind != "map":
            raise ValueError(f"refinement mask must be 'map' or 'sphere' (got {self.kind!r})")
        average = 0.5 * (backend.to_numpy(maps[0]) + backend.to_numpy(maps[1]))
        shape = soft_mask(
            average * backend.to_numpy(sphere),
            pixel_size_A,
            lowpass_A=max(self.lowpass_A, 2 * pixel_size_A),
            threshold_frac=self.threshold_frac,
            extend_A=max(self.extend_A, 2 * pixel_size_A),
            edge_A=max(self.edge_A, 3 * pixel_size_A),
        )
        return sphere * backend.asarray(shape)


def _fit_curve(curve, box: int):
    """An FSC curve (cycles per box, same physical shells) extended or cut to ``box``."""
    if curve is None:
        return None
    n = box // 2 + 1
    c = np.asarray(curve, dtype=float)
    if len(c) >= n:
        return c[:n]
    return np.concatenate([c, np.full(n - len(c), max(0.0, float(c[-1])))])


def _pass_progress(progress, it: int, half: int, n: int, iterations: int):
    """``on_batch`` for one half's pass of iteration ``it``: the stage's fraction after
    every batch, and a line at every tenth of the half's particles (a refinement
    iteration over 10⁵–10⁶ particles takes minutes to hours)."""
    import threading

    from pipeline.reconstruction.progress import report

    if progress is None:
        return None
    lock = threading.Lock()
    state = {"done": 0, "tenth": 0}

    def on_batch(count: int) -> None:
        with lock:
            state["done"] += count
            done = state["done"]
            tenth = (10 * done) // max(1, n)
            message = None
            if tenth > state["tenth"]:
                state["tenth"] = tenth
                message = f"refine iteration {it}, half {half + 1}: {done:,}/{n:,} particles"
            fraction = (it + (half + done / max(1, n)) / 2) / max(1, iterations)
            report(progress, message, min(1.0, fraction))

    return on_batch


def refine(
    ws: Workspace,
    initial_volume: np.ndarray,
    rng: np.random.Generator,
    *,
    subset: np.ndarray | None = None,
    halves: np.ndarray | None = None,
    initial_resolution_A: float = 30.0,
    global_step_deg: float = 7.5,
    max_shift_A: float | None = None,
    max_iterations: int | None = None,
    global_iterations: int = 3,
    mask_radius_frac: float = 0.45,
    march_fraction: float = 0.2,
    settle_iterations: int = 3,
    grow_box: bool = True,
    top_k: int = 1,
    keep_best: bool = False,
    mask: str = "sphere",
    mask_references: bool = False,
    mask_lowpass_A: float = 15.0,
    mask_threshold_frac: float = 0.1,
    mask_extend_A: float = 6.0,
    mask_edge_A: float = 6.0,
    search_margin_px: float = 3.0,
    recheck_every: int = 0,
    recheck_resolution_A: float = 8.0,
    progress: Callable[[str], None] | None = None,
    callback: Callable[[int, list, np.ndarray, np.ndarray], None] | None = None,
) -> RefineResult:
    """Gold-standard refinement of particles ``subset`` (default: all) from ``initial_volume``.

    ``halves`` (n,) 0/1 gives the split (default: a random one from ``rng``); both halves
    start from ``initial_volume`` low-passed to ``initial_resolution_A`` (Å), or each from
    its own when it is a pair (independent ab-initio per half, in the same frame). With
    ``grow_box`` each iteration works on the particles Fourier-cropped to the smallest
    box that holds its search radius and the FSC beyond it (:func:`grids.crop_box`);
    the final maps are reconstructed at the full box. ``max_iterations`` caps the
    iterations (default :func:`default_iterations`); it stops earlier when the half-map
    resolution no longer improves once the search has caught up.

    ``top_k`` > 1: in the global iterations each particle is back-projected at its
    ``top_k`` best poses weighted by their posterior (:func:`pose_weights`) rather than at
    its best one. ``keep_best``: the result is the iteration whose half-maps agreed best
    (FSC 0.143), not the last one.

    ``mask`` … ``mask_edge_A``: the refinement mask (:class:`RefineMask`), by which the
    half-maps' FSC is measured and, with ``mask_references``, the references are
    multiplied before they are projected. ``search_margin_px``: Fourier pixels beyond
    the half-map resolution that the search uses.

    ``recheck_every`` > 0: every that many local iterations (the ``recheck_every``-th
    after the global ones, and so on) each particle is searched globally again
    (``global_step_deg`` over the asymmetric unit, ±1 pixel around its origin) with the
    Fourier pixels out to the iteration's search resolution or ``recheck_resolution_A``
    (Å), whichever is coarser; its global best, polished by local moves, replaces its
    local best only where it scores higher (:func:`refine_pass._recheck`). A particle the
    global iterations put on a pseudo-symmetric mate (or any distant wrong pose) can
    leave it once the map tells them apart. The history records the particles moved.
    """
    from pipeline.reconstruction.grids import change_box, crop_box
    from pipeline.reconstruction.progress import report
    from pipeline.reconstruction.symmetry import symmetry_matrices

    refine_mask = RefineMask(
        mask, mask_radius_frac, mask_lowpass_A, mask_threshold_frac, mask_extend_A, mask_edge_A
    )
    idx_all = np.arange(ws.n) if subset is None else np.asarray(subset)
    if halves is None:
        halves = split_halves(idx_all, ws.n, rng)
    halves = np.asarray(halves)
    groups = [np.sort(idx_all[halves[idx_all] == 0]), np.sort(idx_all[halves[idx_all] == 1])]
    full_box, pix = ws.box, ws.pixel_size_A
    if max_shift_A is None:
        max_shift_A = 0.08 * full_box * pix
    if max_iterations is None:
        max_iterations = default_iterations(
            full_box, pix, initial_resolution_A, march_fraction, settle_iterations
        )
    if isinstance(initial_volume, (tuple, list)):  # one start per half
        maps = [lowpass(v, initial_resolution_A, pix) for v in initial_volume]
    else:
        maps = [lowpass(initial_volume, initial_resolution_A, pix)] * 2
    map_box = full_box
    rotations = np.tile(np.eye(3), (ws.n, 1, 1))
    origins = np.zeros((ws.n, 2))  # pixels of the full box
    res = initial_resolution_A
    curve = None
    history = []
    best_res = np.inf
    stall = 0
    radius = ws.radius_px(res)
    work = ws
    poses = None  # (rotations (n, k, 3, 3), origins (n, k, 2) full-box pixels, weights)
    kept = None  # the best iteration so far (keep_best)
    for it in range(max_iterations):
        t0 = time.perf_counter()
        marching = False
        if it > 0:
            wanted = min(ws.radius_px(res) + search_margin_px, full_box // 2 - 1)
            marching = wanted > radius + march_px(radius, march_fraction)
            radius = min(wanted, radius + march_px(radius, march_fraction))
        if grow_box:
            # room for the search radius, the next march and the FSC beyond it
            ahead = radius + march_px(radius, march_fraction) + 3
            work = ws.cropped(crop_box(ahead, full_box))
        box, wpix = work.box, work.pixel_size_A
        to_work = box / full_box
        if map_box != box:
            maps = [change_box(m, box) for m in maps]
            map_box = box
        ref_mask = refine_mask(maps, wpix) if mask_references else None
        search_res = work.resolution_A(radius)
        data = work.search_data(search_res)
        local_only = it >= global_iterations
        recheck = (
            recheck_every > 0 and local_only and (it - global_iterations + 1) % recheck_every == 0
        )
        moved = [0]
        step = angular_step_deg(radius, full_box / 2)
        wor = origins * to_work
        soft = top_k > 1 and not local_only
        k_poses = None
        if soft:
            k_poses = SoftPoses(
                np.tile(np.eye(3), (ws.n, top_k, 1, 1)),
                np.zeros((ws.n, top_k, 2)),
                np.full((ws.n, top_k), -np.inf),
            )
        fsc_prior = _fit_curve(curve, box)
        maps_next = []
        for h, idx in enumerate(groups):
            fgrid = fourier.pad_fourier(maps[h] if ref_mask is None else maps[h] * ref_mask)
            global_step = None
            if not local_only:
                gstep = max(global_step_deg, min(2 * global_step_deg, step))
                grid = asymmetric_grid(search.so3_grid(gstep), ws.symmetry)
                refs = fourier.project(fgrid, grid, work.plane, data.count)
                if it == 0:
                    shift_step = max(1.0, min(search_res / (4 * wpix), 3.0))
                    shifts = search.shift_grid(max_shift_A / wpix, shift_step)
                else:
                    shift_step = 1.0
                    shifts = search.shift_grid(1.0, 1.0)
                global_step = GlobalStep(refs, grid, shifts, it > 0, top_k if soft else 1)
                moves = [
                    (gstep / 2, shift_step / 2),
                    (gstep / 4, shift_step / 4),
                    (gstep / 4, shift_step / 4),
                ]
            else:
                moves = [(2 * step, 1.0), (step, 0.5), (step, 0.5), (step / 2, 0.25)]
                if recheck:
                    grid = asymmetric_grid(search.so3_grid(global_step_deg), ws.symmetry)
                    res_g = max(search_res, recheck_resolution_A)
                    count_g = min(data.count, work.plane.count(work.radius_px(res_g)))
                    refs = fourier.project(fgrid, grid, work.plane, count_g)
                    global_step = GlobalStep(
                        refs, grid, search.shift_grid(1.0, 1.0), True, 1, count_g, True,
                        global_step_deg, symmetry_matrices(ws.symmetry),
                    )  # fmt: skip
            # one read of each batch for the searches and the back-projection
            bp = align_and_backproject(
                work, fgrid, data.count, idx, rotations, wor, moves,
                max_shift_A / wpix, global_step, k_poses,
                on_batch=_pass_progress(progress, it, h, len(idx), max_iterations),
                moved=moved,
            )  # fmt: skip
            del global_step
            maps_next.append(bp.reconstruct(box // 2 - 1, fsc=fsc_prior, ssnr_default=1.0))
            del bp
        maps = maps_next
        origins = wor / to_work
        if soft:
            weights = pose_weights(k_poses.scores, work.noise_scale)
            poses = (k_poses.rotations, k_poses.origins_px / to_work, weights)
        else:
            poses = None
        mask = refine_mask(maps, wpix)
        curve = fsc_curve(maps[0] * mask, maps[1] * mask)
        res = resolution_at(curve, box, wpix, 0.143)
        if callback:
            callback(it, maps, rotations, origins)
        if kept is None or res < kept["res"]:
            kept = {
                "res": res, "it": it, "maps": maps, "curve": curve, "box": box,
                "rotations": rotations.copy(), "origins": origins.copy(), "poses": poses,
            }  # fmt: skip
        elapsed = time.perf_counter() - t0
        history.append(
            {
                "iteration": it,
                "box_px": box,
                "search_resolution_A": search_res,
                "resolution_A": res,
                "seconds": elapsed,
            }
        )
        if recheck:
            history[-1]["recheck_moved"] = moved[0]
        report(
            progress,
            f"refine iteration {it} (box {box}): {res:.2f} Å ({elapsed:.1f} s)"
            + (f", {moved[0]} particles moved by the global re-check" if recheck else ""),
            (it + 1) / max_iterations,
        )
        if res < best_res - 0.05 * best_res / 10 or marching:
            best_res = min(best_res, res)
            stall = 0
        else:
            stall += 1
            if stall >= 2 and it >= global_iterations + 1:
                break
    if keep_best and kept is not None and kept["it"] != it:
        report(progress, f"refine: iteration {kept['it']} kept ({kept['res']:.2f} Å)")
        maps, curve, map_box = kept["maps"], kept["curve"], kept["box"]
        rotations, origins, poses = kept["rotations"], kept["origins"], kept["poses"]
        res = kept["res"]
        history.append({"iteration": "kept", "kept_iteration": kept["it"], "resolution_A": res})
    if map_box != full_box:
        # the final maps from every Fourier pixel of the full box, at the poses found
        maps = _half_maps(ws, groups, rotations, origins, _fit_curve(curve, full_box), poses)
        mask = refine_mask(maps, pix)
        curve = fsc_curve(maps[0] * mask, maps[1] * mask)
        res = resolution_at(curve, full_box, pix, 0.143)
        history.append({"iteration": "final", "box_px": full_box, "resolution_A": res})
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
