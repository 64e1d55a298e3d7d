"""Orientation conventions: RELION's ZYZ Euler angles.

``rlnAngleRot`` (φ), ``rlnAngleTilt`` (θ), ``rlnAnglePsi`` (ψ), in degrees.
:func:`euler_to_matrix` returns RELION's ``Euler_angles2matrix`` A, the matrix that
rotates *reference (map) coordinates* into *image coordinates*: a particle image
is the projection along z of the map rotated by A, i.e. the 2D slice of the map's
Fourier transform at frequencies ``A.T @ (kx, ky, 0)``.
Coordinates are ordered (x, y, z) = (column, row, section) of the array as stored.
"""

from __future__ import annotations

import numpy as np


def euler_to_matrix(rot_deg, tilt_deg, psi_deg) -> np.ndarray:
    """RELION ZYZ Euler angles (degrees) → rotation matrices, shape (..., 3, 3)."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot_deg, tilt_deg, psi_deg))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(np.broadcast(a, b, g).shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`euler_to_matrix`: (rot, tilt, psi) in degrees with tilt in [0, 180].

    At tilt 0 or 180 (gimbal lock) rot is set to 0 and the in-plane angle goes to psi, as RELION does.
    """
    m = np.asarray(matrix, dtype=np.float64)
    sin_tilt = np.hypot(m[..., 0, 2], m[..., 1, 2])
    regular = sin_tilt > 16 * np.finfo(np.float32).eps
    tilt = np.arctan2(sin_tilt, m[..., 2, 2])
    rot = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
    psi_regular = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    psi_locked = np.where(
        m[..., 2, 2] > 0,
        np.arctan2(-m[..., 1, 0], m[..., 0, 0]),
        np.arctan2(m[..., 1, 0], -m[..., 0, 0]),
    )
    psi = np.where(regular, psi_regular, psi_locked)
    tilt = np.where(regular, tilt, np.where(m[..., 2, 2] > 0, 0.0, np.pi))
    return np.rad2deg(rot), np.rad2deg(tilt), np.rad2deg(psi)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly from SO(3) (Haar measure, via unit quaternions)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def fibonacci_sphere_views(n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """(rot, tilt) in degrees of ``n_views`` directions spread evenly over the whole sphere
    (Fibonacci lattice; equal-area). A projection along −z is the mirror image of the one
    along +z, which no in-plane rotation reproduces, so the whole sphere is needed."""
    i = np.arange(n_views) + 0.5
    tilt = np.degrees(np.arccos(1.0 - 2.0 * i / n_views))
    rot = np.degrees(np.pi * (1.0 + 5**0.5) * i) % 360.0
    return rot, tilt
