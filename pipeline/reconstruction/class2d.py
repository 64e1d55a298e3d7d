"""Reference-free 2D classification with in-plane rotation and translation search.

Hard-assignment expectation-maximisation: every particle is compared (CTF applied
to the references, noise-whitened cross-correlation, :mod:`pipeline.reconstruction.search`)
with every class average at every in-plane angle and shift, and assigned to the
best; class averages are then the CTF-weighted Wiener averages of their members,
rotated and shifted into the class frame by 2D Fourier insertion (×2 padding,
bilinear, gridding correction). Starts from random assignments.

Selection score (documented, used to keep classes): the mean Fourier ring
correlation between the averages of the class's even- and odd-numbered members
over rings from 1/40 Å to the classification resolution. Classes with score ≥
``min_score`` (default 0.3) and at least ``min_fraction`` of an even share of
particles are kept; the best class is always kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.progress import report
from pipeline.reconstruction.workspace import Workspace, recentre


@dataclass
class Class2DResult:
    averages: np.ndarray  # (C, N, N) float32, class frame
    assignment: np.ndarray  # (n,) class index
    counts: np.ndarray  # (C,)
    scores: np.ndarray  # (C,) mean FRC of half-averages
    selected: np.ndarray  # (C,) bool
    psi_deg: np.ndarray  # (n,) in-plane angle of each particle
    origins_px: np.ndarray  # (n, 2)

    def selected_particles(self) -> np.ndarray:
        return np.flatnonzero(self.selected[self.assignment])


def _accumulate(ws, idx, cls, rots, origins, n_classes, count, parity=None):
    """Per-class 2D Fourier accumulators (data, weight) on the ×2 padded grid."""
    xp = backend.xp()
    size = fourier.PAD * ws.box
    n_acc = n_classes * (2 if parity is not None else 1)
    data = xp.zeros((n_acc, size, size), dtype=xp.complex64)
    weight = xp.zeros((n_acc, size, size), dtype=xp.float32)
    inv = ws.noise_inv[:count]
    for start in range(0, len(idx), 512):
        sel = idx[start : start + 512]
        dev = backend.asarray(sel)
        x = recentre(ws.values[dev, :count], origins[sel], ws.plane)
        c = ws.ctf[dev, :count]
        coords = fourier.plane_coords(rots[sel], ws.plane, count)[..., :2]
        # offset each particle's coordinates into its class's slab of a stacked grid
        slab = cls[sel] if parity is None else 2 * cls[sel] + parity[sel]
        vals = c * x * inv
        wts = c * c * inv
        d, w = _scatter_stacked(coords, slab, vals, wts, size, n_acc)
        data += d
        weight += w
    return data, weight


def _scatter_stacked(coords, slab, vals, wts, size, n_acc):
    """Bilinear insertion into n_acc stacked 2D grids (slab index per particle)."""
    xp = backend.xp()
    idx, w = fourier._corners(coords, size)  # (b, K, 4)
    offset = backend.asarray(slab.astype(np.int64) * size * size)[:, None, None]
    flat = (idx + offset).reshape(-1)
    total = n_acc * size * size
    vw = vals[..., None] * w
    data = xp.bincount(flat, weights=vw.real.reshape(-1).astype(xp.float64), minlength=total)
    data = data + 1j * xp.bincount(
        flat, weights=vw.imag.reshape(-1).astype(xp.float64), minlength=total
    )
    ww = xp.bincount(
        flat, weights=(wts[..., None] * w).reshape(-1).astype(xp.float64), minlength=total
    )
    shape = (n_acc, size, size)
    return data.reshape(shape).astype(xp.complex64), ww.reshape(shape).astype(xp.float32)


def _averages(data, weight, box: int, radius_px: float, ssnr: float = 1.0):
    """Wiener class averages in Fourier (padded) and real space from accumulators."""
    xp = backend.xp()
    size = fourier.PAD * box
    g = xp.arange(size, dtype=xp.float32) - size // 2
    rad = xp.sqrt(g[:, None] ** 2 + g[None, :] ** 2) / fourier.PAD
    fgrids, images = [], []
    for d, w in zip(data, weight, strict=True):
        d = fourier.hermitian_fill(d)
        w = fourier.hermitian_fill(w, conj=False)
        reg = xp.mean(w[rad <= radius_px]) / ssnr
        f = d / xp.maximum(w + reg, 1e-30)  # an empty class: zeros, not NaN
        f[rad > radius_px] = 0
        fgrids.append(f)
        images.append(fourier.unpad_fourier(f, box))
    return fgrids, images


def _frc_score(img_a, img_b, box: int, pixel_size_A: float, resolution_A: float) -> float:
    fa = np.fft.rfft2(img_a)
    fb = np.fft.rfft2(img_b)
    ky = np.fft.fftfreq(box, 1.0 / box)
    kx = np.arange(box // 2 + 1)
    r = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int).ravel()
    n = box // 2 + 1
    keep = r < n
    cross = np.bincount(r[keep], (fa * fb.conj()).real.ravel()[keep], n)
    pa = np.bincount(r[keep], (np.abs(fa) ** 2).ravel()[keep], n)
    pb = np.bincount(r[keep], (np.abs(fb) ** 2).ravel()[keep], n)
    frc = cross / np.sqrt(np.maximum(pa * pb, 1e-30))
    lo = max(1, int(np.ceil(box * pixel_size_A / 40.0)))
    hi = max(lo, int(np.floor(box * pixel_size_A / resolution_A)))
    return float(np.mean(frc[lo : hi + 1]))


def classify_2d(
    ws: Workspace,
    n_classes: int,
    rng: np.random.Generator,
    *,
    n_iterations: int = 8,
    resolution_A: float | None = None,
    psi_step_deg: float | None = None,
    max_shift_A: float | None = None,
    min_score: float = 0.3,
    min_fraction: float = 0.2,
    batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Class2DResult:
    """Classify all particles of ``ws`` into ``n_classes`` 2D classes (see module docstring).

    ``batch_size``: every iteration but the last searches only a random mini-batch of
    that many particles (mini-batch EM: averages from the particles searched so far, the
    last iteration searches all), so that the time grows with the particle count only
    through the last iteration; None or ≥ the particle count: every particle, every
    iteration."""
    n, box, pix = ws.n, ws.box, ws.pixel_size_A
    if n_classes < 1 or n < n_classes:
        raise ValueError(f"{n} particles cannot make {n_classes} classes")
    if resolution_A is None:
        resolution_A = max(20.0, 2.5 * pix)
    if max_shift_A is None:
        max_shift_A = 0.06 * box * pix
    data = ws.search_data(resolution_A)
    radius = ws.radius_px(resolution_A)
    if psi_step_deg is None:
        psi_step_deg = min(15.0, max(5.0, np.degrees(1.0 / radius)))
    inplane = search.inplane_rotations(psi_step_deg)
    n_rot = len(inplane)
    psi_all = np.arange(n_rot) * 360.0 / n_rot
    cls = rng.integers(0, n_classes, n)
    rot_idx = rng.integers(0, n_rot, n)
    origins = np.zeros((n, 2))
    idx = np.arange(n)
    shifts = search.shift_grid(max_shift_A / pix, max(1.0, resolution_A / (4 * pix)))
    searched = np.zeros(n, dtype=bool)  # particles aligned at least once
    for it in range(n_iterations):
        # averages of the particles aligned so far (all, random, at the start)
        members = idx if not searched.any() else np.flatnonzero(searched)
        d, w = _accumulate(
            ws, members, cls, inplane[rot_idx], origins, n_classes, ws.plane.radius.size
        )
        fgrids, _ = _averages(d, w, box, radius)
        refs = []
        coords = fourier.plane_coords(inplane, ws.plane, data.count)[..., :2]
        for f in fgrids:
            refs.append(fourier.gather(f, coords))
        refs = backend.xp().concatenate(refs, axis=0)  # (C·R, K)
        last = it == n_iterations - 1
        batch = idx
        if not last and batch_size is not None and batch_size < n:
            batch = np.sort(rng.choice(n, batch_size, replace=False))
        # a particle's first alignment searches every shift, later ones around its origin
        first = ~searched[batch]
        new_cls, new_rot = cls.copy(), rot_idx.copy()
        for fresh in (True, False):
            part = batch[first == fresh]
            if len(part) == 0:
                continue
            local = shifts if fresh else search.shift_grid(1.0, 1.0)
            centres = None if fresh else origins[part]
            best, org, _ = search.global_search(refs, data, part, local, centres)
            origins[part] = np.clip(org, -max_shift_A / pix, max_shift_A / pix)
            new_cls[part], new_rot[part] = best // n_rot, best % n_rot
        searched[batch] = True
        rot_idx = new_rot
        # re-seed empty classes with random particles of the largest class
        counts = np.bincount(new_cls, minlength=n_classes)
        for empty in np.flatnonzero(counts == 0):
            big = np.flatnonzero(new_cls == np.argmax(np.bincount(new_cls, minlength=n_classes)))
            take = rng.choice(big, max(1, len(big) // 2), replace=False)
            new_cls[take] = empty
        changed = float(np.mean(new_cls[batch] != cls[batch]))
        cls = new_cls
        report(
            progress,
            f"2D iteration {it}: {changed:.1%} of {len(batch)} particles changed class",
            (it + 1) / n_iterations,
        )
    parity = (np.arange(n) % 2).astype(np.int64)
    d, w = _accumulate(
        ws, idx, cls, inplane[rot_idx], origins, n_classes, ws.plane.radius.size, parity
    )
    _, halves = _averages(d, w, box, radius)
    halves = [backend.to_numpy(h) for h in halves]
    scores = np.array(
        [
            _frc_score(halves[2 * c], halves[2 * c + 1], box, pix, resolution_A)
            for c in range(n_classes)
        ]
    )
    counts = np.bincount(cls, minlength=n_classes)
    d, w = _accumulate(ws, idx, cls, inplane[rot_idx], origins, n_classes, ws.plane.radius.size)
    _, averages = _averages(d, w, box, radius)
    selected = (scores >= min_score) & (counts >= min_fraction * n / n_classes)
    selected[int(np.argmax(np.where(counts > 0, scores, -np.inf)))] = True
    return Class2DResult(
        np.stack([backend.to_numpy(a) for a in averages]),
        cls,
        counts,
        scores,
        selected,
        psi_all[rot_idx],
        origins,
    )
