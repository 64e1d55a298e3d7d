"""Do the particles support the half-maps' agreement? (issue 22: "halves too similar
for their particle count").

Two half-maps can agree far beyond what their particles allow when they share an error
(a wrong map both halves were led to): their FSC cannot see it. The particles can. Each
particle of one half is compared, at its refined pose, with the projection of the OTHER
half's map (so no particle is compared with a map it was aligned to). Per Fourier shell,
with the particle X = C·P(T) + n (signal C·P(T), noise n) and the other half-map
M = T + e, the correlation ρ of X with C·P(M) obeys

    ρ² = s / (1 + s) · FSC_half,      s = C²|P(T)|² / σ²  (the particles' spectral SNR),

so ``s`` follows from ρ and the half-map FSC. ``n`` particles (``n_sym`` copies each)
then give each map voxel at radius k (Fourier pixels) about n·n_sym / (2k) samples, so a
half-map can reach at most SSNR(k) ≈ ``gain``·n·n_sym·s(k) / (2k) and an FSC of
SSNR / (1 + SSNR): the resolution the particles support. A map the particles do not fit
(a wrong map) has small ρ, so small s, and a supported resolution well worse than the
half-maps' own claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier
from pipeline.reconstruction.fsc import fsc, resolution_at
from pipeline.reconstruction.workspace import Workspace, recentre


@dataclass(frozen=True)
class Support:
    """Per shell (0..N/2): the particles' correlation with the other half's map (``rho``),
    their spectral SNR (``snr``), the FSC they support (``fsc_supported``) and the
    half-maps' own (``fsc_halves``); resolutions (Å) at FSC 0.143 of both."""

    rho: np.ndarray
    snr: np.ndarray
    fsc_supported: np.ndarray
    fsc_halves: np.ndarray
    supported_A: float
    halves_A: float


def particle_support(
    ws: Workspace,
    half_maps: tuple[np.ndarray, np.ndarray],
    rotations: np.ndarray,
    origins_px: np.ndarray,
    halves: np.ndarray,
    subset: np.ndarray,
    n_sym: int = 1,
    gain: float = 1.0,
    max_particles: int | None = None,
    rng: np.random.Generator | None = None,
    batch: int = 256,
) -> Support:
    """How far the particles ``subset`` (gold-standard half ``halves[i]``, pose
    ``rotations[i]``, origin ``origins_px[i]`` pixels) support their half-maps' agreement.

    ``ws`` at the half-maps' box; ``n_sym``: the point group's order; ``gain``: the
    samples-per-voxel factor's calibration (1: n·n_sym / (2k) samples per voxel; on the
    development pentamer at its true poses 1 gave the half-maps' own FSC shell by shell).
    ``max_particles``: at most this many (chosen with ``rng``) are compared; the particle
    count in the bound stays ``len(subset)``.
    """
    xp = backend.xp()
    box, pix = ws.box, ws.pixel_size_A
    n_shells = box // 2 + 1
    count = ws.plane.count(box // 2 - 1)
    shells = backend.asarray(ws.plane.shells(count))
    curve = fsc(half_maps[0], half_maps[1])
    cross = np.zeros((2, n_shells))
    p_data = np.zeros((2, n_shells))
    p_model = np.zeros((2, n_shells))
    subset = np.asarray(subset)
    compared = subset
    if max_particles is not None and len(subset) > max_particles:
        rng = rng or np.random.default_rng(0)
        compared = np.sort(rng.choice(subset, max_particles, replace=False))
    for h in (0, 1):
        idx = compared[halves[compared] == h]
        fgrid = fourier.pad_fourier(half_maps[1 - h])  # the OTHER half's map
        for start in range(0, len(idx), batch):
            rows = idx[start : start + batch]
            dev_rows = backend.asarray(rows)
            values = ws.values[dev_rows, :count]
            ctf = ws.ctf[dev_rows, :count]
            x = recentre(values, origins_px[rows], ws.plane)
            model = ctf * fourier.project(fgrid, rotations[rows], ws.plane, count)

            def shell_sum(v):
                return backend.to_numpy(
                    xp.bincount(
                        shells, weights=v.sum(axis=0).astype(xp.float64), minlength=n_shells
                    )
                )[:n_shells]

            cross[h] += shell_sum((x * xp.conj(model)).real)
            p_data[h] += shell_sum(xp.abs(x) ** 2)
            p_model[h] += shell_sum(xp.abs(model) ** 2)
    rho = cross.sum(0) / np.sqrt(np.maximum(p_data.sum(0) * p_model.sum(0), 1e-30))
    rho = np.clip(rho, 0.0, None)
    halves_fsc = np.clip(curve, 1e-6, 0.999)
    ratio = np.clip(rho**2 / halves_fsc, 0.0, 0.999)
    snr = ratio / (1.0 - ratio)
    k = np.maximum(np.arange(n_shells), 1)
    n_half = 0.5 * len(subset)
    ssnr = gain * n_half * n_sym * snr / (2.0 * k)
    supported = ssnr / (1.0 + ssnr)
    supported[0] = 1.0
    return Support(
        rho=rho,
        snr=snr,
        fsc_supported=supported,
        fsc_halves=np.asarray(curve),
        supported_A=resolution_at(supported, box, pix, 0.143),
        halves_A=resolution_at(curve, box, pix, 0.143),
    )
