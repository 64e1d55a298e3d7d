"""Ab-initio 3D model by stochastic projection matching from random starts.

Each start: the particles of a random mini-batch back-projected at random orientations
(a featureless blob at the particles' size). Each iteration takes a new random
mini-batch, scores every particle against the current model (low-pass at a resolution
that goes from ``start_resolution_A`` to ``end_resolution_A``) over a uniform SO(3)
grid and a shift grid, and adds it to a running back-projection at ``samples`` poses
drawn from its posterior over the whole grid (the model's own, tempered by
``temperature``); earlier contributions decay by ``forget`` — an online (stochastic)
expectation-maximisation, Monte-Carlo in the poses: the marginalisation over all poses
that RELION and cryoSPARC do, at a fixed cost per particle. (``posterior="top"``, before:
at its ``top_k`` best poses, their posterior annealed from broad to the model's own by
two thirds of the way — far sharper than the particle's own posterior early on.)
Several starts run side by side for the first iterations; the one whose projections
best explain particles none of them has seen goes on. The model is kept centred on its
centre of mass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.backproject import Backprojector
from pipeline.reconstruction.grids import centre_of_mass_px, lowpass, shift_volume
from pipeline.reconstruction.progress import report
from pipeline.reconstruction.symmetry import asymmetric_grid
from pipeline.reconstruction.workspace import Workspace, backproject_weighted


@dataclass
class _Start:
    """One ab-initio trajectory: its running back-projection and current (low-passed) model."""

    acc: Backprojector
    volume: object


def _resolution(start_A: float, end_A: float, frac: float) -> float:
    """Geometric schedule from ``start_A`` (frac 0) to ``end_A`` (frac ≥ 1)."""
    return start_A * (end_A / start_A) ** min(1.0, max(0.0, frac))


def anneal_weights(loglik: np.ndarray, n_eff_target: float) -> np.ndarray:
    """Posterior weights (n, k) over each particle's k best poses, tempered so that the
    mean effective number of poses ``1 / Σ w²`` is at least ``n_eff_target``.

    ``loglik`` (n, k): log-likelihoods, best first. The temperature T ≥ 1 divides them
    (T = 1 is the model's own posterior); it is found by bisection on log T. Early in
    ab-initio the model is poor and its posterior over-confident; a broad posterior
    keeps particles from locking onto the first wrong model (deterministic annealing).
    """
    ll = np.asarray(loglik, dtype=np.float64)
    ll = ll - ll[:, :1]

    def weights(temperature: float) -> np.ndarray:
        w = np.exp(ll / temperature)
        return w / w.sum(axis=1, keepdims=True)

    def n_eff(temperature: float) -> float:
        w = weights(temperature)
        return float(np.mean(1.0 / (w * w).sum(axis=1)))

    target = min(float(n_eff_target), ll.shape[1] - 1e-6)
    if target <= 1.0 or n_eff(1.0) >= target:
        return weights(1.0)
    lo, hi = 0.0, 1.0  # log10 T
    while n_eff(10.0**hi) < target and hi < 12:
        lo, hi = hi, hi + 2.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if n_eff(10.0**mid) < target:
            lo = mid
        else:
            hi = mid
    return weights(10.0**hi)


def _merged(idx: np.ndarray, refs: np.ndarray, origins: np.ndarray, weights: np.ndarray):
    """The copies (particle, reference, origin) with their weights summed where the same
    pose of the same particle appears more than once (draws of a sharp posterior)."""
    key = np.column_stack([idx, refs, origins]).astype(np.float64)
    unique, inverse = np.unique(key, axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=weights, minlength=len(unique))
    return unique[:, 0].astype(np.int64), unique[:, 1].astype(np.int64), unique[:, 2:], summed


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
    posterior: str = "sampled",
    samples: int = 10,
    temperature: float = 1.0,
    n_starts: int = 4,
    explore_iterations: int | None = None,
    rounds: int = 1,
    keep_fraction: float = 0.5,
    max_held_out: int = 1000,
    progress: Callable[[str], None] | None = None,
    callback: Callable[[int, np.ndarray], None] | None = None,
    on_judged: Callable[[list[np.ndarray], list[float], int, dict], None] | None = None,
) -> np.ndarray:
    """An initial model (N, N, N) numpy float32 from particles ``subset`` with no reference.

    ``n_starts`` independent trajectories (random starts and mini-batches) run for
    ``explore_iterations`` (default a third of ``n_iterations``), judged ``rounds`` times
    at even intervals: each start still in play is scored on particles held out from
    every mini-batch — the mean over them of the best whitened correlation with the
    model's projections at the current resolution — and the best ``keep_fraction`` of
    them go on (successive halving with 0.5); after the last round only the best
    continues. ``posterior="sampled"`` (default): each particle is added at ``samples``
    poses drawn from its posterior over every pose of the grid, tempered by
    ``temperature`` (Monte-Carlo expectation-maximisation). ``"top"`` (before): at its
    ``top_k`` best poses, their posterior annealed from broad (``top_k``/2 effective poses)
    to the model's own over the first two thirds of the iterations — but at 35 Å a random
    start's posterior spreads over thousands of orientations (the truth's over ~20),
    which ten best poses, all neighbours of the best, do not represent: the model's
    first accidents were locked in. Resolutions in Å, shifts in Å. At most
    ``max_held_out`` particles judge the starts, so that time per iteration does not grow
    with the particle count (mini-batches of ``batch_size``). ``on_judged`` (for
    diagnostics) receives, at every round, the models judged, their scores, the best one's
    index among them and ``{"iteration", "starts"}`` (the starts' numbers from 0).
    """
    from pipeline.geometry import random_rotations

    if posterior not in ("top", "sampled"):
        raise ValueError(f"posterior must be 'top' or 'sampled' (got {posterior!r})")
    if posterior == "sampled" and (int(samples) < 1 or not temperature > 0):
        raise ValueError(
            f"samples must be at least 1 and temperature positive (got {samples}, {temperature})"
        )
    idx_all = np.arange(ws.n) if subset is None else np.asarray(subset)
    box, pix = ws.box, ws.pixel_size_A
    end_resolution_A = max(end_resolution_A, 2.2 * pix)
    start_resolution_A = max(start_resolution_A, end_resolution_A)
    if max_shift_A is None:
        max_shift_A = 0.06 * box * pix
    n_starts = max(1, int(n_starts)) if len(idx_all) >= 4 * min(batch_size, 100) else 1
    if explore_iterations is None:
        explore_iterations = max(1, n_iterations // 3)
    explore_iterations = min(explore_iterations, n_iterations) if n_starts > 1 else 0
    # particles held out while the starts compete (they judge the starts)
    held_out = np.array([], dtype=np.int64)
    pool = idx_all
    if n_starts > 1:
        # at most max_held_out: judging costs a global search per held-out particle
        n_val = min(max(100, len(idx_all) // 6), len(idx_all) // 3, max_held_out)
        held_out = np.sort(rng.choice(idx_all, n_val, replace=False))
        pool = np.setdiff1d(idx_all, held_out)
    batch_size = min(batch_size, len(pool))

    def new_start() -> _Start:
        first = rng.choice(pool, batch_size, replace=False)
        rots = random_rotations(batch_size, rng)
        acc = backproject_weighted(ws, first, rots, np.zeros((batch_size, 2)), None)
        volume = lowpass(acc.reconstruct(box // 2 - 1, ssnr_default=1.0), start_resolution_A, pix)
        return _Start(acc, volume)

    def step_search(res: float):
        radius = ws.radius_px(res)
        step = min(20.0, max(7.5, math.degrees(1.3 / radius)))
        grid = asymmetric_grid(search.so3_grid(step), ws.symmetry)
        shift_step = max(1.0, min(res / (3 * pix), 4.0))
        shifts = search.shift_grid(max_shift_A / pix, shift_step)
        return step, grid, shifts

    def iterate(st: _Start, it: int, idx_pool: np.ndarray) -> None:
        frac = it / max(1, n_iterations - 1)
        res = _resolution(start_resolution_A, end_resolution_A, frac)
        _, grid, shifts = step_search(res)
        data = ws.search_data(res)
        refs = fourier.project(fourier.pad_fourier(st.volume), grid, ws.plane, data.count)
        sel = np.sort(rng.choice(idx_pool, min(batch_size, len(idx_pool)), replace=False))
        if posterior == "sampled":
            best, sh, score = search.global_search(
                refs,
                data,
                sel,
                shifts,
                sample=samples,
                log_scale=0.5 * ws.noise_scale / temperature,
                rng=rng,
            )
            weights = np.full(best.shape, 1.0 / best.shape[1])
        else:
            best, sh, score = search.global_search(refs, data, sel, shifts, top_k=top_k)
            if best.ndim == 1:
                best, sh, score = best[:, None], sh[:, None], score[:, None]
            # log-likelihood at the best intensity scale: noise_scale·score²/2
            ll = 0.5 * ws.noise_scale * np.maximum(score, 0.0) ** 2
            anneal = max(0.0, 1.0 - it / max(1.0, (2.0 / 3.0) * n_iterations))
            weights = anneal_weights(ll, 1.0 + (0.5 * best.shape[1] - 1.0) * anneal)
        del refs
        copies, rots, origins, w = (
            np.repeat(sel, best.shape[1]),
            best.ravel(),
            sh.reshape(-1, 2),
            weights.ravel(),
        )
        if posterior == "sampled":
            copies, rots, origins, w = _merged(copies, rots, origins, w)
        st.acc.scale(forget)
        st.acc.add(backproject_weighted(ws, copies, grid[rots], origins, w))
        volume = st.acc.reconstruct(box // 2 - 1, ssnr_default=1.0)
        com = centre_of_mass_px(lowpass(volume, res, pix))
        if np.linalg.norm(com) > 0.5:
            volume = shift_volume(volume, -com)
            acc_shift(st.acc, -com)
        next_res = _resolution(
            start_resolution_A, end_resolution_A, (it + 1) / max(1, n_iterations - 1)
        )
        st.volume = lowpass(volume, next_res, pix)

    def judge(st: _Start, it: int) -> float:
        """Mean best score of the held-out particles against the model (higher is better)."""
        res = _resolution(start_resolution_A, end_resolution_A, it / max(1, n_iterations - 1))
        _, grid, shifts = step_search(res)
        data = ws.search_data(res)
        refs = fourier.project(fourier.pad_fourier(st.volume), grid, ws.plane, data.count)
        _, _, score = search.global_search(refs, data, held_out, shifts)
        return float(np.mean(score))

    # judging rounds: after explore_iterations·r/rounds iterations (r = 1 … rounds) the
    # starts still in play are scored and the best keep_fraction of them go on; the last
    # round keeps one
    rounds = max(1, min(int(rounds), explore_iterations)) if n_starts > 1 else 0
    judge_at = [round(explore_iterations * r / rounds) for r in range(1, rounds + 1)]
    counts, in_play = [], n_starts
    for r in range(rounds):
        counts.append(in_play)
        in_play = 1 if r == rounds - 1 else max(1, math.ceil(in_play * keep_fraction))
    segments = np.diff([0, *judge_at])
    units = sum(int(c * n) for c, n in zip(counts, segments, strict=True)) + (
        n_iterations - explore_iterations
    )
    done = 0
    starts = [new_start() for _ in range(n_starts)]
    labels = list(range(n_starts))
    for it in range(explore_iterations):
        for k, st in zip(labels, starts, strict=True):
            iterate(st, it, pool)
            done += 1
            res = _resolution(start_resolution_A, end_resolution_A, it / max(1, n_iterations - 1))
            report(
                progress,
                f"ab-initio start {k + 1}/{n_starts}, iteration {it}: {res:.1f} Å",
                done / units,
            )
        if it + 1 not in judge_at or len(starts) == 1:
            continue
        last = it + 1 == explore_iterations
        scores = [judge(st, it + 1) for st in starts]
        n_keep = 1 if last else max(1, math.ceil(len(starts) * keep_fraction))
        order = list(np.argsort(scores)[::-1][:n_keep])
        listed = ", ".join(f"{labels[k] + 1}: {s:.4g}" for k, s in enumerate(scores))
        kept = ", ".join(str(labels[k] + 1) for k in order)
        report(progress, f"ab-initio: start(s) {kept} kept (held-out scores {listed})")
        if on_judged is not None:
            on_judged(
                [backend.to_numpy(st.volume) for st in starts],
                scores,
                int(order[0]),
                {"iteration": it + 1, "starts": list(labels)},
            )
        starts, labels = [starts[k] for k in order], [labels[k] for k in order]
    st = starts[0]
    for it in range(explore_iterations, n_iterations):
        iterate(st, it, idx_all)
        done += 1
        if callback:
            callback(it, st.volume)
        res = _resolution(start_resolution_A, end_resolution_A, it / max(1, n_iterations - 1))
        report(progress, f"ab-initio iteration {it}: {res:.1f} Å", done / units)
    return backend.to_numpy(st.volume)


def acc_shift(acc, shift_xyz_px: np.ndarray) -> None:
    """Translate the running back-projection by (x, y, z) pixels (phase ramp on the padded grid)."""
    xp = backend.xp()
    size = acc.data.shape[0]
    q = (xp.arange(size, dtype=xp.float32) - size // 2) / size
    sx, sy, sz = (float(s) for s in shift_xyz_px)
    arg = -2 * np.pi * (q[None, None, :] * sx + q[None, :, None] * sy + q[:, None, None] * sz)
    acc.data *= xp.exp(1j * arg).astype(xp.complex64)


__all__ = ["abinitio", "acc_shift", "anneal_weights", "centre_of_mass_px", "shift_volume"]
