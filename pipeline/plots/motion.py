"""Drift trajectory of one movie: global path in Å, per-patch local paths (exaggerated)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.plots import pyplot, save


def plot_drift(
    path: str | os.PathLike,
    drift_px: np.ndarray,
    pixel_size_A: float,
    title: str = "",
    local_model=None,
    local_scale: float = 20.0,
) -> Path:
    """Write a PNG: left, the global trajectory (Å, frame 1 at the origin); right, the
    local residual trajectories at the patch centres, ``local_scale`` × magnified."""
    plt = pyplot()
    drift_A = (np.asarray(drift_px) - np.asarray(drift_px)[0]) * pixel_size_A
    n_panels = 2 if local_model is not None else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 4.5), squeeze=False)
    ax = axes[0, 0]
    ax.plot(drift_A[:, 0], drift_A[:, 1], "-o", ms=3, color="tab:blue")
    ax.plot(drift_A[0, 0], drift_A[0, 1], "s", color="tab:green", label="frame 1")
    ax.plot(drift_A[-1, 0], drift_A[-1, 1], "^", color="tab:red", label=f"frame {len(drift_A)}")
    ax.set_xlabel("x drift (Å)")
    ax.set_ylabel("y drift (Å)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "global drift")
    if local_model is not None:
        ax = axes[0, 1]
        ny, nx = local_model.image_shape
        frames = np.arange(local_model.n_frames)
        for cx, cy in local_model.patch_centers_px:
            s = local_model.shift(np.full(frames.shape, cx), np.full(frames.shape, cy), frames)
            ax.plot(cx + local_scale * s[:, 0], cy + local_scale * s[:, 1], "-", lw=1)
            ax.plot(cx, cy, ".", color="k", ms=3)
        ax.set_xlim(0, nx)
        ax.set_ylim(ny, 0)
        ax.set_aspect("equal")
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        ax.set_title(f"local motion ×{local_scale:g}")
    return save(fig, path, dpi=100)
