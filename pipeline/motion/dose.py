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


class DoseWeighter:
    """Normalised weight of one frame at a time on a fixed frequency grid.

    w_f(k) = exp(−N_f / (2 Nₑ(k))), normalised so that Σ_f w_f² = 1 at every frequency,
    without holding every frame's weights at once
    (a 4096² rfft grid is 33 MB per frame in float32). ``k_per_A`` lives on the device.
    Computed in float32; with evenly spaced doses the normalisation is the closed-form
    geometric sum and consecutive frames are obtained by one multiplication each.
    """

    def __init__(self, k_per_A: Any, doses_e_A2: Any, voltage_kV: float = 300.0):
        import numpy as np

        xp = backend.xp()
        ne = critical_exposure(k_per_A, voltage_kV).astype(xp.float32)
        self._half = (-0.5 / ne).astype(xp.float32)  # exponent per e/Å², 0 at k = 0
        self._doses = [float(d) for d in np.asarray(backend.to_numpy(doses_e_A2)).ravel()]
        d = np.asarray(self._doses)
        steps = np.diff(d)
        self._even = len(d) > 1 and bool(np.allclose(steps, steps[0], rtol=1e-9, atol=1e-12))
        if self._even:
            step = float(steps[0])
            half64 = -0.5 / critical_exposure(k_per_A, voltage_kV)  # float64 for the sum
            r = xp.exp(2.0 * step * half64)  # exp(−step/Ne)
            n = len(d)
            # Σ_f exp(−d_f/Ne) = exp(−d_0/Ne) · (1 − rⁿ) / (1 − r); r → 1 at k → 0
            with np.errstate(invalid="ignore", divide="ignore"):
                geometric = xp.where(r < 1.0 - 1e-6, (1.0 - r**n) / (1.0 - r), float(n))
            norm = xp.exp(2.0 * d[0] * half64) * geometric
            self._step = xp.exp(step * self._half)
        else:
            norm = xp.zeros_like(ne)
            for dose in self._doses:
                norm += xp.exp(2.0 * dose * self._half)
        self._inv_norm = (1.0 / xp.sqrt(norm)).astype(xp.float32)
        self._last: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self._doses)

    def weight(self, frame_index: int) -> Any:
        """float32 weights of frame ``frame_index`` (0-based)."""
        xp = backend.xp()
        if self._even and self._last is not None and self._last[0] == frame_index - 1:
            w = self._last[1] * self._step
        else:
            w = xp.exp(self._doses[frame_index] * self._half) * self._inv_norm
        w = w.astype(xp.float32, copy=False)
        self._last = (frame_index, w)
        return w
