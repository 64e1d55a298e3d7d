"""One refinement iteration's pass over the particles of one half: each batch of
particles is read once — its half-plane values and CTFs, from memory or, for a
streamed workspace, computed again from the stacks on disk — and serves the global
search, every local move and the back-projection in turn.

Before, each of these steps walked over all particles by itself, so a streamed
refinement iteration read, Fourier-transformed and CTF-modelled every particle about
five times (a global or four local moves, then the back-projection). Every step is per
particle (the reference map is fixed during the pass), so the poses are the same as
step by step; the back-projection sums the same batches of 256 in the same order on
each thread's own accumulator (:func:`workspace.backproject_weighted`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.backproject import Backprojector
from pipeline.reconstruction.workspace import Workspace, recentre

#: particles read at a time (also the back-projection's insertion batch)
BATCH = 256


@dataclass
class GlobalStep:
    """The global search of a pass: references ``refs`` (R, count) projected from the
    half's map at orientations ``grid`` (R, 3, 3), candidate ``shifts_px`` (S, 2) in the
    pass's pixels, around each particle's current origin when ``centred`` (else 0), and
    the ``top_k`` best poses kept per particle (> 1: soft back-projection).

    ``count``: Fourier pixels the global search scores (None: the pass's). ``recheck``
    (a global search again in a local iteration, :class:`options.RefineOptions`
    ``recheck_every``): the local moves also run from each particle's current pose, and
    its global best, polished by the same moves, replaces that local best only where it
    scores higher; global bests within ``near_deg`` of the current pose (up to the point
    group ``symmetry`` (G, 3, 3)) are not polished (the local moves cover them)."""

    refs: object
    grid: np.ndarray
    shifts_px: np.ndarray
    centred: bool
    top_k: int = 1
    count: int | None = None
    recheck: bool = False
    near_deg: float = 0.0
    symmetry: np.ndarray | None = None


@dataclass
class SoftPoses:
    """Each particle's ``top_k`` poses for a soft back-projection, filled by the pass:
    rotations (n, k, 3, 3), origins (n, k, 2) in the pass's pixels, scores (n, k)."""

    rotations: np.ndarray
    origins_px: np.ndarray
    scores: np.ndarray


def soft_weights(scores: np.ndarray, noise_scale: float) -> np.ndarray:
    """Posterior weights (n, k) of each particle's k candidate poses from their whitened
    scores (n, k): the log-likelihood at the best intensity scale is
    ``noise_scale · score² / 2`` (:mod:`search`); the weights are its softmax."""
    ll = 0.5 * noise_scale * np.maximum(np.asarray(scores, dtype=np.float64), 0.0) ** 2
    ll -= ll.max(axis=1, keepdims=True)
    w = np.exp(ll)
    return w / w.sum(axis=1, keepdims=True)


def used_poses(weights: np.ndarray):
    """Poses of negligible posterior (below 1 % of the particle's best) are skipped:
    (rows, cols, renormalised weights of the used poses)."""
    use = weights >= 0.01 * weights.max(axis=1, keepdims=True)
    w = np.where(use, weights, 0.0)
    w = w / w.sum(axis=1, keepdims=True)
    rows, cols = np.nonzero(use)
    return rows, cols, w[use]


def pose_distance_deg(a: np.ndarray, b: np.ndarray, symmetry: np.ndarray | None) -> np.ndarray:
    """Angle (degrees, (n,)) between poses ``a`` and ``b`` (n, 3, 3), the smallest over
    the point group ``symmetry`` (G, 3, 3) (pose A·S is pose A; None: C1)."""
    m = np.swapaxes(a, 1, 2) @ b  # Aᵀ B
    ops = np.eye(3)[None] if symmetry is None else np.asarray(symmetry)
    trace = np.einsum("sij,nij->ns", ops, m).max(axis=1)  # tr(Sᵀ Aᵀ B), best S
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def align_and_backproject(
    work: Workspace,
    fgrid,
    count: int,
    idx: np.ndarray,
    rotations: np.ndarray,
    origins_px: np.ndarray,
    moves: list[tuple[float, float]],
    max_origin_px: float,
    global_step: GlobalStep | None = None,
    soft: SoftPoses | None = None,
    backproject: bool = True,
    batch: int = BATCH,
    on_batch: Callable[[int], None] | None = None,
    moved: list | None = None,
) -> Backprojector | None:
    """Align particles ``idx`` to the padded map ``fgrid`` and back-project them, reading
    each batch once.

    Per batch: the global search (``global_step``; optional), then the local moves
    ``moves`` [(step_deg, shift_step_px), …] (:func:`search.local_search`) over
    ``count`` Fourier pixels, origins clipped to ±``max_origin_px``, then insertion at
    every Fourier pixel of ``work``'s box (at the best pose, or with ``soft`` at each
    particle's top-k poses weighted by their posterior; the first is the polished best).
    ``rotations`` (n, 3, 3) and ``origins_px`` (n, 2, ``work``'s pixels) are updated in
    place at ``idx``, as is ``soft``; with a re-check (``global_step.recheck``) the
    particles moved to their global best are counted in ``moved`` (a one-element list). Returns the half's accumulator (None without
    ``backproject``). ``on_batch(n)`` is called after each batch is aligned with its
    particle count (from the worker threads: the callee serialises what it shares),
    so that a pass over a million particles shows its progress.
    """
    import threading

    lock = threading.Lock()
    idx = np.asarray(idx)
    starts = list(range(0, len(idx), batch))
    workers = max(1, min(search._workers(), len(starts)))
    grid_MB = 12 * (fourier.PAD * work.box) ** 3 / 1e6
    # each thread its own accumulator while the ×2 padded grids are small
    own_grids = grid_MB < 256
    inner_elems = 40_000_000 // workers  # global-search scores in memory over all threads

    def align(start: int):
        """Search one batch; returns what its insertion needs (values, CTF, poses, weights)."""
        rows = idx[start : start + batch]
        b = len(rows)
        dev = backend.asarray(rows)
        values, ctf = work.values[dev], work.ctf[dev]
        data = search.SearchData(values, ctf, work.noise_inv, work.plane, count)
        local = np.arange(b)
        rot, org = rotations[rows], origins_px[rows]
        current = (rot, org)
        if global_step is not None:
            g = global_step
            centres = org if g.centred else None
            g_data = data
            if g.count is not None and g.count < count:
                g_data = search.SearchData(values, ctf, work.noise_inv, work.plane, g.count)
            best, org, score = search.global_search(
                g.refs, g_data, local, g.shifts_px, centres, inner_elems, g.top_k, workers=1
            )
            if g.top_k > 1:
                k_best, k_org, k_score = best, org, score
                best, org = best[:, 0], org[:, 0]
            rot = g.grid[best]
        if global_step is not None and global_step.recheck:
            rot, org, score = _recheck(fgrid, data, local, current, (rot, org), moves, g)
            if moved is not None:
                with lock:
                    moved[0] += int(
                        np.sum(pose_distance_deg(rot, current[0], g.symmetry) > g.near_deg)
                    )
        else:
            for step_deg, sstep in moves:
                rot, org, score = search.local_search(
                    fgrid, data, local, rot, org, step_deg, sstep, workers=1
                )
        if on_batch is not None:
            on_batch(b)
        rotations[rows] = rot
        origins_px[rows] = np.clip(org, -max_origin_px, max_origin_px)
        if soft is None:
            insert = (values, ctf, rotations[rows], origins_px[rows], None)
        else:
            k_rot = global_step.grid[k_best]
            k_rot[:, 0], k_org[:, 0], k_score[:, 0] = rot, org, score
            k_org = np.clip(k_org, -max_origin_px, max_origin_px)
            soft.rotations[rows], soft.origins_px[rows], soft.scores[rows] = k_rot, k_org, k_score
            r, c, w = used_poses(soft_weights(k_score, work.noise_scale))
            sel = backend.asarray(r)
            insert = (values[sel], ctf[sel], k_rot[r, c], k_org[r, c], w)
        return insert if backproject else None

    def insert_into(bp: Backprojector, item) -> None:
        values, ctf, rot, org, w = item
        xp = backend.xp()
        vals = recentre(values, org, work.plane)
        if w is not None:
            # data += w·c·X and weight += w·c²: scale both X and c by √w
            root = xp.sqrt(backend.asarray(w, dtype=xp.float32))[:, None]
            vals, ctf = vals * root, ctf * root
        bp.insert(vals, ctf, rot, work.plane, work.noise_inv)

    def run_share(g: int) -> Backprojector | None:
        bp = Backprojector(work.box, work.symmetry) if backproject else None
        for start in starts[g::workers]:
            item = align(start)
            if bp is not None:
                insert_into(bp, item)
        return bp

    if workers <= 1 or own_grids or not backproject:
        if workers <= 1:
            parts = [run_share(0)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(run_share, range(workers)))
        if not backproject:
            return None
        for part in parts[1:]:
            parts[0].add(part)
        return parts[0]
    # large grids: one accumulator; batches searched on the threads a wave at a time,
    # inserted here in batch order (the same sums whatever the threads' timing)
    from concurrent.futures import ThreadPoolExecutor

    bp = Backprojector(work.box, work.symmetry)
    with ThreadPoolExecutor(workers) as pool:
        for w0 in range(0, len(starts), workers):
            for item in list(pool.map(align, starts[w0 : w0 + workers])):
                insert_into(bp, item)
    return bp


def _recheck(fgrid, data, local, current, found, moves, g: GlobalStep):
    """A particle's local best against its global best (:class:`GlobalStep` ``recheck``):
    the local ``moves`` from its ``current`` (rotations, origins); from the global
    search's ``found`` poses, where they lie more than ``g.near_deg`` from the current
    one, two moves of half and a quarter of that (the grid's spacing) and then the same
    ``moves``; the higher score (over the same Fourier pixels) wins. Returns (rotations,
    origins, scores)."""
    rot, org = current
    for step_deg, sstep in moves:
        rot, org, score = search.local_search(
            fgrid, data, local, rot, org, step_deg, sstep, workers=1
        )
    far = np.nonzero(pose_distance_deg(found[0], current[0], g.symmetry) > g.near_deg)[0]
    if len(far) == 0:
        return rot, org, score
    g_rot, g_org = found[0][far], found[1][far]
    polish = [(g.near_deg / 2, 0.5), (g.near_deg / 4, 0.5)]
    for step_deg, sstep in polish + list(moves):
        g_rot, g_org, g_score = search.local_search(
            fgrid, data, local[far], g_rot, g_org, step_deg, sstep, workers=1
        )
    win = g_score > score[far]
    take = far[win]
    rot, org, score = rot.copy(), org.copy(), score.copy()
    rot[take], org[take], score[take] = g_rot[win], g_org[win], g_score[win]
    return rot, org, score
