"""Point-group symmetry: Cn, Dn (axis z, two-fold about x), T and O (RELION frames:
the O four-folds along x, y and z).

A map with symmetry S satisfies V(S·r) = V(r); the image of pose A then equals the
image of pose A·S, so searches only need viewing directions in one asymmetric unit
(:func:`asymmetric_grid`) and maps are symmetrised by averaging their Fourier
transform over the group (:func:`symmetrise_volume`).
"""

from __future__ import annotations

import numpy as np

from cryofac.errors import CryofacError
from pipeline import backend
from pipeline.reconstruction import fourier
from pipeline.reconstruction.grids import (
    centre_of_mass_px,
    shift_volume,
    sphere_points,
)


class SymmetryError(CryofacError):
    """An unknown or unsupported symmetry name."""


def _axis_rotation(axis, angle_rad: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def _closure(generators: list[np.ndarray]) -> np.ndarray:
    group = [np.eye(3)]
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for g in frontier:
            for h in generators:
                m = np.round(h @ g, 12)
                if not any(np.allclose(m, x, atol=1e-8) for x in group):
                    group.append(m)
                    new.append(m)
        frontier = new
    return np.array(group)


def symmetry_matrices(name: str) -> np.ndarray:
    """Rotation matrices (n, 3, 3) of the group ``name`` (C1, C4, D2, T, O); identity first."""
    text = name.strip().upper()
    if text == "O":
        return _closure(
            [_axis_rotation((0, 0, 1), np.pi / 2), _axis_rotation((1, 1, 1), 2 * np.pi / 3)]
        )
    if text == "T":
        return _closure(
            [_axis_rotation((0, 0, 1), np.pi), _axis_rotation((1, 1, 1), 2 * np.pi / 3)]
        )
    if len(text) < 2 or text[0] not in "CD" or not text[1:].isdigit() or int(text[1:]) < 1:
        raise SymmetryError(
            f"symmetry {name!r} is not supported (use Cn, Dn, T or O, e.g. C1, C4, D2)"
        )
    n = int(text[1:])
    mats = np.array([_axis_rotation((0, 0, 1), 2 * np.pi * i / n) for i in range(n)])
    if text[0] == "D":
        flip = _axis_rotation((1, 0, 0), np.pi)
        mats = np.concatenate([mats, mats @ flip])
    return mats


def abinitio_symmetry(name: str, subgroups: dict[str, str] | None = None) -> str:
    """The point group ab-initio imposes for a reconstruction in ``name``: its entry in
    ``subgroups`` (default :attr:`AbinitioOptions.subgroups`, O → C4), else ``name``."""
    from pipeline.reconstruction.options import AbinitioOptions

    table = AbinitioOptions().subgroups if subgroups is None else subgroups
    text = name.strip().upper()
    return table.get(text, text)


def symmetrise_poses(rotations: np.ndarray, name: str) -> np.ndarray:
    """All symmetry-equivalent poses A·S (n_poses·n_sym, 3, 3)."""
    ops = symmetry_matrices(name)
    return (np.asarray(rotations)[:, None] @ ops[None]).reshape(-1, 3, 3)


#: a generic direction: its Voronoi cell under the group is the asymmetric unit used
_PROBE = np.array([0.2673, 0.5345, 0.8018])


def asymmetric_grid(rotations: np.ndarray, name: str) -> np.ndarray:
    """The rotations whose viewing direction lies in one asymmetric unit of the group.

    The viewing direction of pose A is d = A[2, :]; pose A·S views along Sᵀd. A pose is
    kept when d is the member of its orbit closest to a fixed generic direction, which
    keeps 1/|G| of the directions and every in-plane angle.
    """
    ops = symmetry_matrices(name)
    if len(ops) == 1:
        return rotations
    d = rotations[:, 2, :]  # (R, 3)
    orbit = np.einsum("sji,rj->rsi", ops, d)  # Sᵀ d
    proj = orbit @ _PROBE
    return rotations[proj[:, 0] >= proj.max(axis=1) - 1e-9]


def symmetrise_volume(volume, name: str, rotation: np.ndarray | None = None):
    """Average of a map over the group, by trilinear sampling of its ×2 padded transform.

    With ``rotation`` R (3, 3), the map is first rotated, W(x) = V(Rᵀx), then averaged:
    used to bring a map whose symmetry axes are turned into the group's frame.
    """
    ops = symmetry_matrices(name)
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    if len(ops) == 1 and rotation is None:
        return vol
    if rotation is not None:
        # Ŵ(q) = V̂(Rᵀq); averaging over g samples V̂(Rᵀgᵀq), i.e. q·g·R in row form
        ops = ops @ np.asarray(rotation, dtype=np.float64)
    box = vol.shape[0]
    fgrid = fourier.pad_fourier(vol)
    k = xp.fft.fftfreq(box, 1.0 / box).astype(xp.float32)
    kx = xp.arange(box // 2 + 1, dtype=xp.float32)
    q = xp.stack(
        xp.broadcast_arrays(kx[None, None, :], k[None, :, None], k[:, None, None]), -1
    ).reshape(-1, 3)
    acc = xp.zeros(q.shape[0], dtype=xp.complex64)
    parts = fourier.split_parts(fgrid)

    def sample(op):
        return fourier.gather(parts, fourier.PAD * (q @ backend.asarray(op, dtype=xp.float32)))

    # the operators' samples on --threads threads (map_coordinates runs without the
    # GIL), a wave at a time, summed in the operators' order: the same sum as one by one
    workers = backend.threads() if backend.device() == "cpu" else 1
    if workers > 1 and len(ops) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(ops), workers):
                for part in pool.map(sample, ops[start : start + workers]):
                    acc += part
    else:
        for op in ops:
            acc += sample(op)
    acc = (acc / len(ops)).reshape(box, box, box // 2 + 1)
    out = fft.irfftn(acc, s=(box,) * 3)
    return fft.fftshift(out).astype(xp.float32)


def about_z(angle_deg: float) -> np.ndarray:
    """Rotation matrix (3, 3) of ``angle_deg`` degrees about z (right-handed)."""
    return _axis_rotation((0, 0, 1), np.deg2rad(angle_deg))


def _less_spherical_average(volume):
    """The map centred on its centre of mass, minus its average over spheres about the
    box centre (float32, on device)."""
    from pipeline.reconstruction.postprocess import less_spherical_average

    return less_spherical_average(shift_volume(volume, -centre_of_mass_px(volume)))


#: generic rotations (no point group's): how alike a map is to itself turned at random
_GENERIC_TURNS = 12
#: a map whose non-spherical part holds less of its power (in the band) has no features
#: to judge: a featureless shell (its leftover, the voxel lattice's, is cubic) scores 0
MIN_FEATURES = 0.01


def symmetry_consistency(
    volume, name: str, rotations: np.ndarray, pixel_size_A: float, resolution_A: float
) -> np.ndarray:
    """How symmetric under group ``name`` the map is once rotated by each of ``rotations``.

    The map is centred on its centre of mass and its spherical average removed (every
    group keeps it). For each R (n, 3, 3), c_G is the mean over the group's operations
    g ≠ 1 of the normalised correlation between W = V(Rᵀ·) and W(gᵀ·), over Fourier
    components from 2 pixels⁻¹ to ``resolution_A`` (Å); c_0 is the same mean over
    generic rotations, i.e. how alike the map is to itself turned anyhow (near 1 for a
    featureless shell, whose leftover is the voxel lattice's). The score is
    (c_G − c_0) / (1 − c_0): 1 for a map with that symmetry in that frame, ~0 for one
    without it; 0 for one without features (``MIN_FEATURES``). Simulated apoferritin
    scores 0.97 with O at 15 Å, 0.12 with a three-fold about z.
    """
    return _consistency_scorer(volume, name, pixel_size_A, resolution_A)(rotations)


def _consistency_scorer(volume, name: str, pixel_size_A: float, resolution_A: float):
    """:func:`symmetry_consistency` of one map as a function of the rotations: the map's
    transform, the band and the generic baseline c_0 are computed once."""
    from pipeline.geometry import random_rotations

    xp = backend.xp()
    ops = symmetry_matrices(name)[1:]
    box = volume.shape[0]
    radius = min(box // 2 - 1, box * pixel_size_A / resolution_A)
    pts = sphere_points(radius)
    pts = pts[np.linalg.norm(pts, axis=1) >= 2.0]
    aniso = _less_spherical_average(volume)
    fgrid = fourier.pad_fourier(aniso, correct=False)
    q = backend.asarray(pts, dtype=xp.float32)
    # features: the part of the band's power that is not spherical
    full = fourier.gather(fourier.pad_fourier(volume, correct=False), fourier.PAD * q)
    part = fourier.gather(fgrid, fourier.PAD * q)
    featureless = float(xp.sum(xp.abs(part) ** 2)) < MIN_FEATURES * float(xp.sum(xp.abs(full) ** 2))

    def mean_correlation(rot: np.ndarray, turns: np.ndarray) -> float:
        mats = backend.asarray(np.concatenate([rot[None], turns @ rot]), dtype=xp.float32)
        vals = fourier.gather(fgrid, fourier.PAD * (q[None] @ mats))  # (1 + T, M)
        ref, others = vals[0], vals[1:]
        cross = xp.sum(others * xp.conj(ref)[None], axis=1).real
        norm = xp.sqrt(xp.sum(xp.abs(others) ** 2, axis=1) * xp.sum(xp.abs(ref) ** 2))
        return float(backend.to_numpy(xp.mean(cross / xp.maximum(norm, 1e-30))))

    generic = random_rotations(_GENERIC_TURNS, np.random.default_rng(0))
    c0 = 0.0 if featureless else min(mean_correlation(np.eye(3), generic), 1.0 - 1e-6)

    def score(rotations: np.ndarray) -> np.ndarray:
        rotations = np.asarray(rotations, dtype=np.float64)
        if featureless:
            return np.zeros(len(rotations))
        c_g = np.array([mean_correlation(rot, ops) for rot in rotations])
        return (c_g - c0) / (1.0 - c0)

    return score


def orient_to_group(
    volume, sub: str, full: str, pixel_size_A: float, resolution_A: float
) -> tuple[float, float]:
    """The turn about z (degrees) that puts a map with symmetry ``sub`` (Cn, its axis z)
    in the frame of the larger group ``full`` (e.g. a C4 ab-initio map of an O particle:
    its other four-folds must lie along x and y), and the consistency reached.

    The map's own axis fixes z but not the turn about it, which is searched over one
    period 360°/n in 1° steps, then refined to 0.1°. Pass ``about_z(angle)`` to
    :func:`symmetrise_volume` as ``rotation`` to turn and average the map.
    """
    text = sub.strip().upper()
    if text[0] != "C" or not text[1:].isdigit():
        raise SymmetryError(f"orienting from {sub!r} is not supported (a Cn about z is)")
    period = 360.0 / int(text[1:])
    score = _consistency_scorer(volume, full, pixel_size_A, resolution_A)
    coarse = np.arange(0.0, period, 1.0)
    scores = score(np.array([about_z(a) for a in coarse]))
    best = float(coarse[int(np.argmax(scores))])
    fine = best + np.arange(-1.0, 1.01, 0.1)
    scores = score(np.array([about_z(a) for a in fine]))
    j = int(np.argmax(scores))
    return float(np.round(fine[j], 6) % period), float(scores[j])
