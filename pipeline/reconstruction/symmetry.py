"""Point-group symmetry operators (Cn and Dn about z), RELION convention."""

from __future__ import annotations

import numpy as np

from cryofac.errors import CryofacError


class SymmetryError(CryofacError):
    """An unknown or unsupported symmetry name."""


def symmetry_matrices(name: str) -> np.ndarray:
    """Rotation matrices (n, 3, 3) of the group ``name`` (``C1``, ``C4``, ``D2``...); axis along z."""
    text = name.strip().upper()
    if len(text) < 2 or text[0] not in "CD" or not text[1:].isdigit() or int(text[1:]) < 1:
        raise SymmetryError(f"symmetry {name!r} is not supported (use Cn or Dn, e.g. C1, C4, D2)")
    n = int(text[1:])
    angles = 2 * np.pi * np.arange(n) / n
    c, s = np.cos(angles), np.sin(angles)
    mats = np.zeros((n, 3, 3))
    mats[:, 0, 0], mats[:, 0, 1], mats[:, 1, 0], mats[:, 1, 1] = c, -s, s, c
    mats[:, 2, 2] = 1.0
    if text[0] == "D":
        flip = np.diag([1.0, -1.0, -1.0])  # two-fold about x
        mats = np.concatenate([mats, mats @ flip])
    return mats


def symmetrise_poses(rotations: np.ndarray, name: str) -> np.ndarray:
    """All symmetry-equivalent poses A·S (n_poses·n_sym, 3, 3) for back-projection."""
    ops = symmetry_matrices(name)
    return (np.asarray(rotations)[:, None] @ ops[None]).reshape(-1, 3, 3)
