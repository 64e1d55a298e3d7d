"""Orientation and translation search by maximum likelihood under Gaussian noise
with a per-particle intensity scale: for image X with CTF c, reference projection
P and noise 1/σ²(k) = w(k), maximising the log-likelihood
``Σ_k w·[2a·Re(conj(X·φ_s)·c·P) − a²c²|P|²]`` over the scale a ranks poses by the
whitened cross-correlation ``Re Σ w·conj(X·φ_s)·c·P / sqrt(Σ w·c²|P|²)`` (φ_s: the
re-centring phases of shift s), which is the score used here. Global search scores every (orientation, shift)
with two real matrix products per batch (batches on ``--threads`` threads); local search scores a 3×3×3 rotation
neighbourhood × 3×3 shifts around each particle's pose (pattern search with a
shrinking step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.geometry import euler_to_matrix
from pipeline.reconstruction import fourier


def so3_grid(step_deg: float) -> np.ndarray:
    """A near-uniform grid of rotations (R, 3, 3) with angular spacing about ``step_deg`` degrees.

    Viewing directions on a Fibonacci sphere (spacing ≈ step), in-plane angles every step.
    """
    step = np.deg2rad(step_deg)
    n_dir = max(8, int(np.ceil(4 * np.pi / (step * step))))
    i = np.arange(n_dir) + 0.5
    tilt = np.rad2deg(np.arccos(1 - 2 * i / n_dir))
    rot = np.rad2deg((np.pi * (1 + 5**0.5) * i) % (2 * np.pi))
    n_psi = max(4, int(np.ceil(360.0 / step_deg)))
    psi = np.arange(n_psi) * 360.0 / n_psi
    r, p = np.repeat(rot, n_psi), np.tile(psi, n_dir)
    t = np.repeat(tilt, n_psi)
    return euler_to_matrix(r, t, p)


def inplane_rotations(step_deg: float) -> np.ndarray:
    """In-plane rotations (R, 3, 3) about z every ``step_deg`` degrees (2D classification)."""
    n = max(4, int(np.ceil(360.0 / step_deg)))
    return euler_to_matrix(np.zeros(n), np.zeros(n), np.arange(n) * 360.0 / n)


def rotvec_to_matrix(rotvecs: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vectors (…, 3) in radians → matrices (…, 3, 3)."""
    v = np.asarray(rotvecs, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = v / safe[..., 0]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack(
        [
            np.stack([zero, -kz, ky], -1),
            np.stack([kz, zero, -kx], -1),
            np.stack([-ky, kx, zero], -1),
        ],
        -2,
    )
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


def shift_grid(max_shift_px: float, step_px: float) -> np.ndarray:
    """Square grid of shifts (S, 2) in pixels within ±``max_shift_px``, spacing ``step_px``."""
    n = int(np.floor(max_shift_px / step_px + 1e-9))
    g = np.arange(-n, n + 1) * step_px
    gx, gy = np.meshgrid(g, g)
    return np.stack([gx.ravel(), gy.ravel()], -1)


def _workers() -> int:
    """Threads the searches use: ``--threads`` on CPU, one on GPU."""
    return backend.threads() if backend.device() == "cpu" else 1


def _parallel(fn, starts, workers: int) -> None:
    """``fn(start)`` for every batch start, on ``workers`` threads (the heavy numpy
    work — matrix products, gathers, ufuncs — runs without the GIL); batches write
    disjoint slices of their outputs, so the result does not depend on the threads."""
    starts = list(starts)
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            fn(start)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(starts))) as pool:
        for _ in pool.map(fn, starts):
            pass


@dataclass
class SearchData:
    """Particles in half-plane Fourier form, truncated to the current search radius."""

    values: object  # (n, K) complex64, device
    ctf: object  # (n, K) float32, device
    noise_inv: object  # (K,) float32, device: 1/σ²(k)
    plane: fourier.HalfPlane
    count: int  # pixels used: the prefix of the radius-sorted half plane


def _phases(origins_px, data: SearchData, count: int):
    """Re-centring phases (b, S, K) for per-particle candidate origins (b, S, 2) pixels."""
    xp = backend.xp()
    org = backend.asarray(origins_px, dtype=xp.float32)
    kx = backend.asarray(data.plane.kx[:count], dtype=xp.float32)
    ky = backend.asarray(data.plane.ky[:count], dtype=xp.float32)
    arg = (2.0 * np.pi / data.plane.box) * (org[..., 0, None] * kx + org[..., 1, None] * ky)
    return (xp.cos(arg) + 1j * xp.sin(arg)).astype(xp.complex64)


def _draw(scores, log_scale: float, levels: np.ndarray):
    """Indices into one particle's flat ``scores`` drawn at the CDF ``levels`` (in [0, 1))
    of ``exp(log_scale · max(score, 0)²)``; one row at a time, in place on one buffer, so
    that it stays in cache."""
    xp = backend.xp()
    cdf = xp.maximum(scores, 0.0)
    cdf *= cdf
    cdf *= np.float32(log_scale)
    cdf -= cdf.max()
    xp.exp(cdf, out=cdf)
    xp.cumsum(cdf, out=cdf)
    u = backend.asarray(levels, dtype=cdf.dtype) * cdf[-1]
    return xp.minimum(xp.searchsorted(cdf, u), cdf.size - 1)


def global_search(
    refs,
    data: SearchData,
    idx: np.ndarray,
    shifts_px: np.ndarray,
    centres_px: np.ndarray | None = None,
    max_elems: int = 40_000_000,
    top_k: int = 1,
    workers: int | None = None,
    sample: int = 0,
    log_scale: float = 1.0,
    rng: np.random.Generator | None = None,
):
    """Best reference, origin and score of each particle ``idx`` over every reference (R, K)
    and every candidate origin ``centres_px[i] + shifts_px`` (pixels; centres default 0).

    Returns numpy (best_ref (n,), best_origin (n, 2) pixels, score (n,)); with ``top_k`` > 1
    the ``top_k`` best of each particle, best first: (n, k), (n, k, 2), (n, k).
    ``workers``: threads (default :func:`_workers`; 1 inside a caller's own threads).

    ``sample`` > 0: instead of the best, ``sample`` poses per particle drawn from its
    posterior over *every* (reference, origin) pair, ``p ∝ exp(log_scale · max(score, 0)²)``
    (``log_scale`` = noise_scale / 2 / temperature gives the log-likelihood at the best
    intensity scale), by systematic sampling with ``rng`` (each draw stands for 1/sample of
    the particle's weight; a pose may be drawn more than once), highest score first.
    A broad posterior is spread over the whole sphere, not over the neighbours of the
    best pose that the ``top_k`` best would be.
    """
    xp = backend.xp()
    workers = _workers() if workers is None else workers
    count = data.count
    n_ref = refs.shape[0]
    shifts_px = np.asarray(shifts_px, dtype=np.float64).reshape(-1, 2)
    n_shift = shifts_px.shape[0]
    centres = np.zeros((len(idx), 2)) if centres_px is None else np.asarray(centres_px)
    p_cat = xp.concatenate([refs.real, refs.imag], axis=-1).astype(xp.float32)  # (R, 2K)
    p_pow = (xp.abs(refs) ** 2).astype(xp.float32)  # (R, K)
    inv = data.noise_inv[:count]
    # max_elems scores in memory at once over all threads
    batch = max(1, int(max_elems // max(1, n_ref * n_shift * workers)))
    k = max(1, int(sample)) if sample else max(1, int(top_k))
    if sample:
        rng = np.random.default_rng() if rng is None else rng
        # systematic sampling: particle i's draws at the CDF levels (j + u_i) / k
        levels = (np.arange(k)[None, :] + rng.random((len(idx), 1))) / k
    best_r = np.empty((len(idx), k), dtype=np.int64)
    best_o = np.empty((len(idx), k, 2))
    best = np.empty((len(idx), k))
    batch = min(batch, -(-len(idx) // workers))  # a batch for every thread at least

    def one(start: int) -> None:
        sel = backend.asarray(idx[start : start + batch])
        x = data.values[sel, :count]
        c = data.ctf[sel, :count]
        b = x.shape[0]
        cand = centres[start : start + b, None, :] + shifts_px[None]  # (b, S, 2)
        y = xp.conj(x[:, None, :] * _phases(cand, data, count)) * (c * inv)[:, None, :]
        y = xp.concatenate([y.real, -y.imag], axis=-1).reshape(b * n_shift, 2 * count)
        cross = y @ p_cat.T  # (B·S, R): particle-major, no transposed copy
        norm = ((c * c) * inv) @ p_pow.T  # (B, R)
        score = cross.reshape(b, n_shift, n_ref) / xp.sqrt(xp.maximum(norm, 1e-30))[:, None, :]
        rows = xp.arange(b)[:, None]
        if sample:
            flat = score.reshape(b, n_shift * n_ref)
            draw = xp.stack([_draw(flat[i], log_scale, levels[start + i]) for i in range(b)])
            order = xp.argsort(-xp.take_along_axis(flat, draw, axis=1), axis=1)
            draw = xp.take_along_axis(draw, order, axis=1)
            s_arg, r_arg = draw // n_ref, draw % n_ref
        elif k == 1:
            flat = xp.argmax(score.reshape(b, n_shift * n_ref), axis=1)[:, None]
            s_arg, r_arg = flat // n_ref, flat % n_ref
        else:
            # the k best (orientation, shift) pairs all have orientations among the k
            # best by their best shift: select those first (an n_shift-times smaller
            # partition), then the k best pairs of their k × n_shift scores
            k_rot = min(k, n_ref)
            per_rot = xp.max(score, axis=1)  # (B, R)
            r_top = xp.argpartition(-per_rot, k_rot - 1, axis=1)[:, :k_rot]  # (B, k_rot)
            sub = xp.take_along_axis(score, r_top[:, None, :], axis=2).reshape(b, -1)
            arg = xp.argpartition(-sub, k - 1, axis=1)[:, :k]
            order = xp.argsort(-xp.take_along_axis(sub, arg, axis=1), axis=1)
            arg = xp.take_along_axis(arg, order, axis=1)  # (B, k) into (S, k_rot)
            s_arg = arg // k_rot
            r_arg = xp.take_along_axis(r_top, arg % k_rot, axis=1)
        top = backend.to_numpy(score[rows, s_arg, r_arg])
        s_arg, r_arg = backend.to_numpy(s_arg), backend.to_numpy(r_arg)
        best_r[start : start + b] = r_arg
        best_o[start : start + b] = cand[np.arange(b)[:, None], s_arg]
        best[start : start + b] = top

    _parallel(one, range(0, len(idx), batch), workers)
    if k == 1 and not sample:
        return best_r[:, 0], best_o[:, 0], best[:, 0]
    return best_r, best_o, best


def _neighbourhood(step_deg: float) -> np.ndarray:
    g = np.deg2rad(step_deg) * np.array([-1.0, 0.0, 1.0])
    v = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return rotvec_to_matrix(v)  # (27, 3, 3); index 13 is the identity


def local_search(
    fgrid,
    data: SearchData,
    idx: np.ndarray,
    rotations: np.ndarray,
    origins_px: np.ndarray,
    step_deg: float,
    shift_step_px: float,
    batch: int = 128,
    workers: int | None = None,
):
    """One pattern-search move for particles ``idx``: best of δ·A over a 3×3×3 rotation
    neighbourhood (spacing ``step_deg``) × 3×3 shifts (spacing ``shift_step_px``).

    Returns numpy (rotations (n, 3, 3), origins (n, 2) pixels, score (n,)); ``workers``
    as in :func:`global_search`.
    """
    xp = backend.xp()
    workers = _workers() if workers is None else workers
    count = data.count
    deltas = _neighbourhood(step_deg)
    n_j = deltas.shape[0]
    offsets = shift_grid(shift_step_px, shift_step_px)
    n_s = offsets.shape[0]
    inv = data.noise_inv[:count]
    new_rot = np.array(rotations, dtype=np.float64, copy=True)
    new_org = np.array(origins_px, dtype=np.float64, copy=True)
    scores = np.empty(len(idx))
    batch = max(1, min(batch, -(-len(idx) // workers)))

    def one(start: int) -> None:
        stop = min(len(idx), start + batch)
        b = stop - start
        cand = deltas[None] @ new_rot[start:stop, None]  # (b, J, 3, 3)
        refs = fourier.project(fgrid, cand.reshape(-1, 3, 3), data.plane, count)
        refs = refs.reshape(b, n_j, count)
        sel = backend.asarray(idx[start:stop])
        x = data.values[sel, :count]
        c = data.ctf[sel, :count]
        cand_org = new_org[start:stop, None, :] + offsets[None]  # (b, S, 2)
        ph = _phases(cand_org, data, count)
        y = xp.conj(x[:, None, :] * ph) * (c * inv)[:, None, :]  # (b, S, K)
        y_cat = xp.concatenate([y.real, -y.imag], axis=-1)  # (b, S, 2K)
        p_cat = xp.concatenate([refs.real, refs.imag], axis=-1)  # (b, J, 2K)
        cross = p_cat @ xp.transpose(y_cat, (0, 2, 1))  # (b, J, S)
        norm = xp.sum((xp.abs(refs) ** 2) * (c * c * inv)[:, None, :], axis=-1)  # (b, J)
        score = (cross / xp.sqrt(xp.maximum(norm, 1e-30))[:, :, None]).reshape(b, n_j * n_s)
        best = backend.to_numpy(xp.argmax(score, axis=1))
        scores[start:stop] = backend.to_numpy(xp.max(score, axis=1))
        j, s = best // n_s, best % n_s
        new_rot[start:stop] = cand[np.arange(b), j]
        new_org[start:stop] = new_org[start:stop] + offsets[s]

    _parallel(one, range(0, len(idx), batch), workers)
    return new_rot, new_org, scores
