"""Aligning a map to a reference map: rotation, translation and hand.

Used to compare a reconstruction with a known truth (tests, benchmarks) and to
report FSC against a reference. Global rotation search on a uniform SO(3) grid at
low resolution with both maps centred on their centres of mass, for both hands,
then a local pattern search over rotation (3×3×3 neighbourhood) and translation
(3×3×3 grid) with a shrinking step, maximising the normalised Fourier
cross-correlation within a growing resolution radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, search
from pipeline.reconstruction.fsc import fsc, resolution_at
from pipeline.reconstruction.grids import centre_of_mass_px, shift_volume, sphere_points


@dataclass
class Alignment:
    rotation: np.ndarray  # (3, 3): aligned(x) = moving'(R.T @ (x − t))
    translation_px: np.ndarray  # (3,) (x, y, z)
    flipped: bool  # moving mirrored (z → −z) before rotating
    correlation: float


def flip_hand(volume: np.ndarray) -> np.ndarray:
    """Mirror a volume through the central z plane (z → −z about voxel N/2)."""
    return np.roll(np.asarray(volume)[::-1], 1, axis=0)


def _scores(fmov, fref_vals, pts, rotations, translations, box):
    """Normalised correlation (R, T) of rotated/translated moving vs reference at points pts."""
    xp = backend.xp()
    coords = fourier.PAD * (
        backend.asarray(pts, dtype=xp.float32)[None] @ backend.asarray(rotations, dtype=xp.float32)
    )
    vals = fourier.gather(fmov, coords)  # (R, M)
    t = backend.asarray(translations, dtype=xp.float32)
    p = backend.asarray(pts, dtype=xp.float32)
    ph = xp.exp(-2j * np.pi * (t @ p.T) / box).astype(xp.complex64)  # (T, M)
    cross = (vals * xp.conj(fref_vals)[None]) @ ph.T  # (R, T)
    norm = xp.sqrt(xp.sum(xp.abs(vals) ** 2, axis=1) * xp.sum(xp.abs(fref_vals) ** 2))
    return backend.to_numpy(cross.real / norm[:, None])


def align_maps(
    moving: np.ndarray,
    reference: np.ndarray,
    pixel_size_A: float,
    *,
    coarse_resolution_A: float = 25.0,
    fine_resolution_A: float | None = None,
    global_step_deg: float = 12.0,
    try_hands: bool = True,
) -> Alignment:
    """Rotation, translation and hand that best superimpose ``moving`` on ``reference``."""
    box = reference.shape[0]
    if fine_resolution_A is None:
        fine_resolution_A = 3.0 * pixel_size_A
    ref = np.asarray(reference, dtype=np.float32)
    fref_grid = fourier.pad_fourier(ref, correct=False)
    com_ref = centre_of_mass_px(ref)
    best: Alignment | None = None
    for flipped in [False, True] if try_hands else [False]:
        mov = flip_hand(moving) if flipped else np.asarray(moving, dtype=np.float32)
        com = centre_of_mass_px(mov)
        mov_c = backend.to_numpy(shift_volume(mov, -com))
        fmov = fourier.pad_fourier(mov_c)
        radius = box * pixel_size_A / coarse_resolution_A
        pts = sphere_points(radius)
        fref_vals = fourier.gather(fref_grid, fourier.PAD * backend.asarray(pts, dtype=np.float32))
        grid = search.so3_grid(global_step_deg)
        t0 = np.asarray(com_ref)[None]
        scores = np.concatenate(
            [
                _scores(fmov, fref_vals, pts, grid[s : s + 2000], t0, box)[:, 0]
                for s in range(0, len(grid), 2000)
            ]
        )
        rot = grid[int(np.argmax(scores))]
        trans = np.asarray(com_ref, dtype=np.float64)
        step = global_step_deg / 2
        tstep = 1.0
        fine_radius = box * pixel_size_A / fine_resolution_A
        score = -np.inf
        while step > 0.2:
            radius = min(fine_radius, max(radius, 1.2 / np.deg2rad(step)))
            pts = sphere_points(radius)
            fref_vals = fourier.gather(
                fref_grid, fourier.PAD * backend.asarray(pts, dtype=np.float32)
            )
            for _ in range(3):
                cand = search._neighbourhood(step) @ rot[None]
                g = np.array([-tstep, 0.0, tstep])
                tr = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) + trans
                s = _scores(fmov, fref_vals, pts, cand, tr, box)
                j, k = np.unravel_index(int(np.argmax(s)), s.shape)
                rot, trans, score = cand[j], tr[k], float(s[j, k])
                if j == 13 and k == 13:
                    break
            step /= 2
            tstep /= 2
        # express relative to the uncentred moving map: aligned = R·(mov − com) + trans
        total_t = trans - rot.T @ com * 0 - (rot @ com) * 0
        result = Alignment(rot, total_t, flipped, score)
        result._com = com  # type: ignore[attr-defined]
        if best is None or score > best.correlation:
            best = result
    assert best is not None
    return best


def apply_alignment(moving: np.ndarray, alignment: Alignment) -> np.ndarray:
    """The moving map transformed by ``alignment`` (real-space linear interpolation)."""
    from scipy.ndimage import affine_transform

    mov = flip_hand(moving) if alignment.flipped else np.asarray(moving, dtype=np.float32)
    com = getattr(alignment, "_com", np.zeros(3))
    mov = backend.to_numpy(shift_volume(mov, -com))
    box = mov.shape[0]
    c = box // 2
    # out(x) = mov(R^T (x - t)) in (x, y, z); ndimage works in (z, y, x) index order
    r = alignment.rotation
    perm = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    m = perm @ r.T @ perm
    t = perm @ alignment.translation_px
    centre = np.full(3, c, dtype=np.float64)
    offset = centre - m @ (centre + t)
    return affine_transform(mov, m, offset=offset, order=3, mode="constant").astype(np.float32)


def aligned_fsc(moving: np.ndarray, reference: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """FSC per shell (:func:`fsc`) of ``moving`` against ``reference`` after aligning it
    (orientation, translation, hand: :func:`align_maps`)."""
    aligned = apply_alignment(moving, align_maps(moving, reference, pixel_size_A))
    return fsc(aligned, reference)


def aligned_resolution_A(
    moving: np.ndarray, reference: np.ndarray, pixel_size_A: float, threshold: float = 0.5
) -> float:
    """Resolution (Å) where the FSC of ``moving`` against ``reference`` drops below
    ``threshold``, after aligning it (orientation, translation, hand: :func:`align_maps`)."""
    curve = aligned_fsc(moving, reference, pixel_size_A)
    return float(resolution_at(curve, reference.shape[0], pixel_size_A, threshold))
