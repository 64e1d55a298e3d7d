"""CTF diagnostics: power spectrum with the fitted CTF² on one half, and the 1D fit."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pipeline.plots import pyplot, save


def plot_ctf(path: str | os.PathLike, estimate, title: str = "") -> Path:
    """Write a PNG for a :class:`pipeline.ctf_estimate.CTFEstimate`."""
    from pipeline import backend
    from pipeline.ctf_model import ctf_1d, ctf_2d

    plt = pyplot()
    tile = estimate.tile
    p = estimate.params
    data = np.fft.fftshift(_full_from_rfft(estimate.spectrum, tile))
    with backend.using("cpu"):
        model = np.asarray(ctf_2d((tile, tile), estimate.pixel_size_A, p, rfft=False)) ** 2
    model = np.fft.fftshift(model)
    half = tile // 2
    shown = data.copy()
    lo, hi = np.percentile(data[data != 0], [2, 98]) if np.any(data) else (0, 1)
    shown = np.clip((shown - lo) / max(hi - lo, 1e-12), 0, 1)
    shown[:, half:] = model[:, half:]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    axes[0].imshow(shown, cmap="gray", origin="upper")
    axes[0].set_title("data (left) | fitted CTF² (right)")
    axes[0].axis("off")
    ax = axes[1]
    k = estimate.profile_k_per_A
    if len(k):
        prof = estimate.profile
        ax.plot(k, (prof - prof.min()) / max(np.ptp(prof), 1e-12), lw=1, label="data (rot. avg.)")
        mean = 0.5 * (p.defocus_u_A + p.defocus_v_A)
        with backend.using("cpu"):
            fit = np.asarray(ctf_1d(k, mean, p)) ** 2
        ax.plot(k, fit, lw=1, label="CTF² at mean defocus")
    if len(estimate.shell_k_per_A):
        ax.plot(estimate.shell_k_per_A, estimate.shell_cc, ".-", lw=1, label="shell CC")
        ax.axhline(0.3, color="grey", lw=0.5, ls="--")
    if math.isfinite(estimate.max_resolution_A):
        ax.axvline(1 / estimate.max_resolution_A, color="tab:red", lw=0.8, label="fit resolution")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.legend(fontsize=8)
    ax.set_title(
        title
        or f"U {p.defocus_u_A:.0f} Å, V {p.defocus_v_A:.0f} Å, {p.defocus_angle_deg:.1f}°, "
        f"fit {estimate.max_resolution_A:.1f} Å"
    )
    return save(fig, path, dpi=90)


def _full_from_rfft(half: np.ndarray, n: int) -> np.ndarray:
    """Hermitian-symmetric full (n, n) array from an rfft-grid real array (n, n//2+1)."""
    full = np.zeros((n, n))
    full[:, : half.shape[1]] = half
    idx_y = (-np.arange(n)) % n
    for x in range(half.shape[1], n):
        full[:, x] = half[idx_y, n - x]
    return full
