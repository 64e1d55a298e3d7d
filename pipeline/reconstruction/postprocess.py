"""Post-processing of half-maps: soft solvent mask, FSC weighting, Guinier B-factor
(Rosenthal & Henderson 2003) and sharpening.

B-factor convention: a map whose structure factors fall as exp(−B·k²/4) (k in 1/Å)
has a Guinier slope d ln|F| / d k² = −B/4; :func:`guinier_bfactor` returns that
B (Å², positive for a blurred map) and :func:`sharpen` multiplies by exp(+B·k²/4).
"""

from __future__ import annotations

import numpy as np

from pipeline import backend


def _radial_k(box: int, pixel_size_A: float):
    xp = backend.xp()
    kz = xp.fft.fftfreq(box, d=pixel_size_A)
    kx = xp.fft.rfftfreq(box, d=pixel_size_A)
    return xp.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)


def radial_amplitude(volume, pixel_size_A: float) -> tuple[np.ndarray, np.ndarray]:
    """(k in 1/Å, mean |F| per shell) of a cubic map, shells of one Fourier pixel."""
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    box = vol.shape[0]
    amp = xp.abs(fft.rfftn(vol))
    shells = xp.rint(_radial_k(box, pixel_size_A) * box * pixel_size_A).astype(xp.int64).ravel()
    n = box // 2 + 1
    keep = shells < n
    sums = xp.bincount(shells[keep], weights=amp.ravel()[keep].astype(xp.float64), minlength=n)
    counts = xp.bincount(shells[keep], minlength=n)
    return np.arange(n) / (box * pixel_size_A), backend.to_numpy(sums / xp.maximum(counts, 1))


def guinier_bfactor(
    volume, pixel_size_A: float, fit_from_A: float = 10.0, fit_to_A: float | None = None
) -> float:
    """B (Å²) from a straight-line fit of ln|F| against k² between ``fit_from_A`` and ``fit_to_A``."""
    box = volume.shape[0]
    if fit_to_A is None:
        fit_to_A = 2.0 * pixel_size_A
    k, amp = radial_amplitude(volume, pixel_size_A)
    sel = (k >= 1.0 / fit_from_A) & (k <= 1.0 / fit_to_A) & (amp > 0)
    if sel.sum() < 3:
        lo = max(1, box // 8)
        sel = np.zeros_like(sel)
        sel[lo:] = amp[lo:] > 0
    slope, _ = np.polyfit(k[sel] ** 2, np.log(amp[sel]), 1)
    return float(-4.0 * slope)


def fsc_weight(fsc_curve: np.ndarray) -> np.ndarray:
    """Rosenthal–Henderson weight sqrt(2·FSC/(1+FSC)) of the combined map, per shell."""
    f = np.clip(np.asarray(fsc_curve, dtype=float), 0.0, 1.0)
    return np.sqrt(2 * f / (1 + f))


def sharpen(
    volume,
    pixel_size_A: float,
    b_factor_A2: float,
    resolution_A: float,
    fsc_curve: np.ndarray | None = None,
):
    """exp(+B·k²/4)·(FSC weight)·low-pass at ``resolution_A`` (raised-cosine, 2 shells wide)."""
    xp, fft = backend.xp(), backend.fft()
    vol = backend.asarray(volume, dtype=xp.float32)
    box = vol.shape[0]
    k = _radial_k(box, pixel_size_A)
    filt = xp.exp(b_factor_A2 * k * k / 4.0)
    if fsc_curve is not None:
        w = backend.asarray(np.append(fsc_weight(fsc_curve), 0.0))
        shells = xp.minimum(xp.rint(k * box * pixel_size_A).astype(xp.int64), len(fsc_curve))
        filt = filt * w[shells]
    cut = box * pixel_size_A / resolution_A
    t = xp.clip((k * box * pixel_size_A - cut) / 2.0 + 0.5, 0.0, 1.0)
    filt = filt * (0.5 + 0.5 * xp.cos(np.pi * t))
    return fft.irfftn(fft.rfftn(vol) * filt, s=vol.shape).astype(xp.float32)


def soft_mask(
    volume,
    pixel_size_A: float,
    lowpass_A: float = 15.0,
    threshold_frac: float = 0.1,
    extend_A: float = 3.0,
    edge_A: float = 6.0,
) -> np.ndarray:
    """Soft solvent mask: the map low-passed at ``lowpass_A``, thresholded at a fraction
    of its maximum, dilated by ``extend_A`` and given a raised-cosine edge ``edge_A`` wide.
    Returns numpy float32 in [0, 1]."""
    from scipy.ndimage import distance_transform_edt

    from pipeline.reconstruction.grids import lowpass

    smooth = backend.to_numpy(lowpass(volume, lowpass_A, pixel_size_A))
    binary = smooth > threshold_frac * smooth.max()
    dist = distance_transform_edt(~binary) * pixel_size_A
    mask = np.where(dist <= extend_A, 1.0, 0.0)
    edge = (dist > extend_A) & (dist < extend_A + edge_A)
    mask[edge] = 0.5 + 0.5 * np.cos(np.pi * (dist[edge] - extend_A) / edge_A)
    return mask.astype(np.float32)


def less_spherical_average(volume):
    """The map minus its average over spheres about the box centre (float32, on device):
    what of it depends on orientation."""
    from pipeline.reconstruction.grids import radius_grid, shell_mean

    xp = backend.xp()
    vol = backend.asarray(volume, dtype=xp.float32)
    shells = xp.rint(radius_grid(vol.shape[0])).astype(xp.int64)
    profile = shell_mean(vol, shells, int(shells.max()) + 1)
    return (vol - profile[shells]).astype(xp.float32)
