"""Reconstruction diagnostics: FSC curves and central slices of a map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.plots import pyplot, save


def plot_fsc(
    path: str | os.PathLike,
    frequency_per_A: np.ndarray,
    curves: dict[str, np.ndarray],
    resolution_A: float | None = None,
) -> Path:
    """FSC against spatial frequency (1/Å) with the 0.143 and 0.5 thresholds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, curve in curves.items():
        ax.plot(frequency_per_A, curve, label=label)
    ax.axhline(0.143, color="grey", ls="--", lw=0.8, label="0.143")
    ax.axhline(0.5, color="grey", ls=":", lw=0.8, label="0.5")
    if resolution_A:
        ax.axvline(1.0 / resolution_A, color="red", lw=0.8, label=f"{resolution_A:.2f} Å")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_slices(path: str | os.PathLike, volume: np.ndarray, title: str = "") -> Path:
    """Central XY, XZ and YZ sections of a (z, y, x) volume side by side."""
    plt = pyplot()
    c = volume.shape[0] // 2
    sections = [("XY", volume[c]), ("XZ", volume[:, c, :]), ("YZ", volume[:, :, c])]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2), dpi=100)
    for ax, (name, img) in zip(axes, sections, strict=True):
        ax.imshow(img, cmap="gray", origin="lower")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save(fig, path)
