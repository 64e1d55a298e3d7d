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


#: Point groups whose ab-initio runs in a subgroup (then the map is symmetrised to the
#: full group before refinement). Octahedral (e.g. apoferritin): with O imposed from the
#: start, all 6 ab-initio runs tried on the demo's simulated apoferritin led refinement to
#: the same wrong map, reproduced by both half-maps (23 Å against the truth); from a C4
#: ab-initio (the four-fold about z, a subgroup of O in this frame) 3 runs of 4 reached
#: 7.3–10.5 Å and one the same 23 Å map (BENCHMARKS.md, issue 5). RELION likewise advises
#: a lower-symmetry initial model for high point groups.
ABINITIO_SUBGROUP = {"O": "C4"}


def abinitio_symmetry(name: str) -> str:
    """The point group ab-initio imposes for a reconstruction in ``name``."""
    text = name.strip().upper()
    return ABINITIO_SUBGROUP.get(text, text)


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


def symmetrise_volume(volume, name: str):
    """Average of a map over the group, by trilinear sampling of its ×2 padded transform."""
    from pipeline.reconstruction import fourier

    ops = symmetry_matrices(name)
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    if len(ops) == 1:
        return vol
    box = vol.shape[0]
    fgrid = fourier.pad_fourier(vol)
    k = xp.fft.fftfreq(box, 1.0 / box).astype(xp.float32)
    kx = xp.arange(box // 2 + 1, dtype=xp.float32)
    q = xp.stack(
        xp.broadcast_arrays(kx[None, None, :], k[None, :, None], k[:, None, None]), -1
    ).reshape(-1, 3)
    acc = xp.zeros(q.shape[0], dtype=xp.complex64)
    for op in ops:
        coords = fourier.PAD * (q @ backend.asarray(op, dtype=xp.float32))
        acc += fourier.gather(fgrid, coords)
    acc = (acc / len(ops)).reshape(box, box, box // 2 + 1)
    out = fft.irfftn(acc, s=(box,) * 3)
    return fft.fftshift(out).astype(xp.float32)
