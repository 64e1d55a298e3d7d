"""Dose weighting after Grant & Grigorieff (2015), eLife 4:e06980.

Critical exposure (Eq. 3, fitted at 300 kV)::

    Nₑ(k) = 0.245 · k^(−1.665) + 2.81   e/Å²,   k in 1/Å

At 200 kV the critical exposure is scaled by 0.8 (radiation damage per e/Å² is larger at
lower voltage; cisTEM/RELION do the same). Frame f (1-based) with accumulated exposure
``N_f = pre_exposure + f · dose_per_frame`` at the *end* of the frame (RELION's choice)
is weighted by ``exp(−N_f / (2 Nₑ(k)))`` and the weights are normalised per frequency so
that Σ_f w_f(k)² = 1 (Eq. 9), which keeps the noise power of the weighted sum flat.
"""

from __future__ import annotations

from typing import Any

from pipeline import backend

CRITICAL_A = 0.245
CRITICAL_B = -1.665
CRITICAL_C = 2.81


def voltage_scale(voltage_kV: float) -> float:
    """Factor applied to the 300 kV critical exposure: 1.0 at 300 kV, 0.8 at 200 kV.

    Linear in between and clamped outside [200, 300] kV (only those two are measured).
    """
    v = min(max(float(voltage_kV), 200.0), 300.0)
    return 0.8 + 0.2 * (v - 200.0) / 100.0


def critical_exposure(k_per_A: Any, voltage_kV: float = 300.0) -> Any:
    """Critical exposure Nₑ in e/Å² at spatial frequency ``k_per_A`` (1/Å; 0 gives +inf)."""
    xp = backend.xp()
    k = xp.asarray(k_per_A, dtype=xp.float64)
    with_k = xp.where(k > 0, k, 1.0)
    ne = CRITICAL_A * with_k**CRITICAL_B + CRITICAL_C
    ne = xp.where(k > 0, ne, xp.inf)
    return ne * voltage_scale(voltage_kV)


def accumulated_dose(
    n_frames: int, dose_per_frame_e_A2: float, pre_exposure_e_A2: float = 0.0
) -> Any:
    """Exposure in e/Å² at the end of each frame: pre + f · dose for f = 1..n (numpy)."""
    import numpy as np

    return pre_exposure_e_A2 + dose_per_frame_e_A2 * np.arange(1, n_frames + 1, dtype=np.float64)


def frame_weights(
    k_per_A: Any,
    doses_e_A2: Any,
    voltage_kV: float = 300.0,
    normalise: bool = True,
) -> Any:
    """Weights w[f, ...] = exp(−N_f / (2 Nₑ(k))) for each frame, on the active device.

    ``k_per_A``: array of spatial frequencies (any shape); ``doses_e_A2``: accumulated
    exposure at the end of each frame (length n_frames). With ``normalise`` the weights
    obey Σ_f w² = 1 at every frequency. Returns float32 of shape (n_frames, *k.shape).
    """
    xp = backend.xp()
    ne = critical_exposure(k_per_A, voltage_kV)
    doses = xp.asarray(doses_e_A2, dtype=xp.float64).reshape((-1,) + (1,) * ne.ndim)
    w = xp.exp(-doses / (2.0 * ne[None]))
    if normalise:
        w = w / xp.sqrt(xp.sum(w * w, axis=0, keepdims=True))
    return w.astype(xp.float32)


class DoseWeighter:
    """Normalised weight of one frame at a time on a fixed frequency grid.

    Same values as ``frame_weights(...)[f]`` without holding every frame's weights at once
    (a 4096² rfft grid is 33 MB per frame in float32). ``k_per_A`` lives on the device.
    """

    def __init__(self, k_per_A: Any, doses_e_A2: Any, voltage_kV: float = 300.0):
        xp = backend.xp()
        self._ne = critical_exposure(k_per_A, voltage_kV)
        self._doses = [float(d) for d in backend.to_numpy(doses_e_A2).ravel()]
        norm = xp.zeros_like(self._ne)
        for d in self._doses:
            norm += xp.exp(-d / self._ne)
        self._inv_norm = 1.0 / xp.sqrt(norm)

    def __len__(self) -> int:
        return len(self._doses)

    def weight(self, frame_index: int) -> Any:
        """float32 weights of frame ``frame_index`` (0-based)."""
        xp = backend.xp()
        d = self._doses[frame_index]
        return (xp.exp(-d / (2.0 * self._ne)) * self._inv_norm).astype(xp.float32)
