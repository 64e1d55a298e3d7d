"""Template picker: FindEM/Roseman fast local normalised cross-correlation in Fourier space.

Templates are 2D class averages or projections of a map over the sphere (protein bright;
:mod:`pipeline.picking.template_source`). The micrograph is Fourier-cropped to
``pixels_per_diameter`` pixels across a particle and phase-flipped (particles bright, as in
the blob picker); each template is resampled to the same pixel size, multiplied by |CTF| of
the micrograph (so it looks like a phase-flipped particle), low-passed, masked by a
soft-edged disc of ``mask_fraction`` × diameter, and rotated in-plane in ``angle_step_deg``
steps. For every rotated template t (zero mean, Σt² = Σmask under the mask M)

    NCC(x) = Σ t·I(x+·) / (N_M · σ_M(x)),   σ_M² = ⟨I²⟩_M − ⟨I⟩_M²

with all sums computed by FFT over the whole micrograph (batched forward and inverse FFTs
per rotated template). The best NCC over rotations and templates is the figure of merit;
the threshold is set per micrograph from the NCC map's background noise; peaks go through
the same non-maximum suppression and contamination/variance screens as the blob picker.
The best template index and in-plane angle of each pick are returned in
:class:`TemplatePicks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline import backend
from pipeline.ctf_model import CTFParams, chi, ctf_from_chi
from pipeline.picking.blob import contamination_mask, local_std
from pipeline.picking.common import (
    Candidates,
    Picks,
    background_stats,
    bin_and_flip,
    local_maxima,
    ndimage,
    values_at,
)


@dataclass
class TemplatePicks(Picks):
    """Picks with the best template index and in-plane angle (degrees) of each."""

    template_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    angle_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))


def resample(image, pixel_size_A: float, target_pixel_A: float, box: int):
    """Resample a square 2D image to ``target_pixel_A`` by Fourier cropping/padding, then
    crop/pad the result to ``box`` × ``box`` around the centre."""
    xp, fft = backend.xp(), backend.fft()
    image = backend.asarray(image, dtype=xp.float32)
    n = image.shape[0]
    m = max(2, 2 * int(round(n * pixel_size_A / target_pixel_A / 2.0)))
    spectrum = fft.fftshift(fft.fft2(image))
    out = xp.zeros((m, m), dtype=spectrum.dtype)
    lo, hi = (n - m) // 2, (m - n) // 2
    if m <= n:
        out[:] = spectrum[lo : lo + m, lo : lo + m]
    else:
        out[hi : hi + n, hi : hi + n] = spectrum
    scaled = xp.real(fft.ifft2(fft.ifftshift(out))).astype(xp.float32) * (m * m) / (n * n)
    result = xp.zeros((box, box), dtype=xp.float32)
    a = min(box, m)
    so, do = (m - a) // 2, (box - a) // 2
    result[do : do + a, do : do + a] = scaled[so : so + a, so : so + a]
    return result


def templates_from_map(volume, pixel_size_A: float, n_views: int = 50) -> np.ndarray:
    """Projections (n_views, box, box) of a 3D map (protein positive) as templates.

    Views are spread evenly over the whole sphere (Fibonacci lattice of tilt/rot angles,
    :func:`pipeline.geometry.fibonacci_sphere_views`); the in-plane angle is
    searched by the picker. Uses the Fourier projector of :mod:`pipeline.simulate.projection`.
    """
    from pipeline.geometry import euler_to_matrix, fibonacci_sphere_views
    from pipeline.simulate.projection import project

    volume = np.asarray(backend.to_numpy(volume), dtype=np.float32)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"a template map must be a cubic 3D array (got shape {volume.shape})")
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1 (got {n_views})")
    rot, tilt = fibonacci_sphere_views(n_views)
    rotations = euler_to_matrix(rot, tilt, np.zeros(n_views))
    return project(volume, rotations, pixel_size_A, method="fourier")


def _soft_disc(box: int, radius_px: float, edge_px: float = 2.0):
    xp = backend.xp()
    yy, xx = xp.mgrid[:box, :box].astype(xp.float32) - box // 2
    r = xp.sqrt(xx * xx + yy * yy)
    t = xp.clip((r - radius_px) / max(edge_px, 1e-3), 0.0, 1.0)
    return (0.5 + 0.5 * xp.cos(math.pi * t)).astype(xp.float32)


def prepare_templates(
    templates,
    template_pixel_A: float,
    pixel_A: float,
    box: int,
    ctf: CTFParams | None,
    lowpass_A: float,
):
    """Templates at ``pixel_A`` in a ``box``, CTF-modulated (|CTF|) and low-passed."""
    xp, fft = backend.xp(), backend.fft()
    stack = backend.asarray(templates, dtype=xp.float32)
    if stack.ndim == 2:
        stack = stack[None]
    k = xp.fft.fftfreq(box, d=pixel_A)
    kx, ky = k[None, :], k[:, None]
    filt = xp.exp(-math.log(2.0) * (kx * kx + ky * ky) * lowpass_A**2)
    if ctf is not None:
        filt = filt * xp.abs(ctf_from_chi(chi(kx, ky, ctf), ctf.amplitude_contrast))
    out = []
    for image in stack:
        t = resample(image - image.mean(), template_pixel_A, pixel_A, box)
        out.append(xp.real(fft.ifft2(fft.fft2(t) * filt)).astype(xp.float32))
    return xp.stack(out)


def template_bank(templates, mask, angles_deg: np.ndarray):
    """Every template at every in-plane angle, normalised under ``mask``: (J, box, box) with
    zero mean and Σt² = Σmask; row j is template ``j // n_angles`` at angle
    ``angles_deg[j % n_angles]`` (degrees, counter-clockwise, bilinear rotation)."""
    xp = backend.xp()
    ndi = ndimage()
    n_mask = float(mask.sum())
    rows = []
    for template in templates:
        for angle in angles_deg:
            rotated = ndi.rotate(template, float(angle), reshape=False, order=1, mode="constant")
            t = rotated * mask
            t = (t - t.sum() / n_mask) * mask
            rows.append(t / xp.maximum(xp.sqrt((t * t).sum() / n_mask), 1e-12))
    return xp.stack(rows).astype(xp.float32)


def ncc_map(image, templates, mask, angles_deg: np.ndarray, batch: int = 16):
    """Best normalised cross-correlation over templates and in-plane rotations.

    FindEM/Roseman fast local NCC: the mask's local mean and SD of the image come from two
    FFT correlations; each rotated template costs one batched forward and inverse FFT of
    the image size. Returns (best NCC map, index of the best template, index of the best
    angle); every map is indexed like ``image`` with the template centre at the pixel.
    """
    xp, fft = backend.xp(), backend.fft()
    ny, nx = image.shape
    box = mask.shape[0]
    h = box // 2
    n_mask = float(mask.sum())

    def spectra(small):
        # rfft2 of the template zero-padded to the image: only its first ``box`` rows are
        # non-zero, so transform those along x, then everything along y
        small = small.reshape(-1, box, box)
        wide = xp.zeros((small.shape[0], box, nx), dtype=xp.float32)
        wide[:, :, :box] = small
        rows = fft.rfft(wide, axis=-1)
        big = xp.zeros((small.shape[0], ny, rows.shape[-1]), dtype=rows.dtype)
        big[:, :box] = rows
        return xp.conj(fft.fft(big, axis=-2))

    f_img = fft.rfft2(image.astype(xp.float32))
    f_mask = spectra(mask)[0]
    local_mean = fft.irfft2(f_img * f_mask, s=(ny, nx)) / n_mask
    local_sq = fft.irfft2(fft.rfft2(image * image) * f_mask, s=(ny, nx)) / n_mask
    sigma = xp.sqrt(xp.maximum(local_sq - local_mean * local_mean, 1e-12)).astype(xp.float32)
    scale = 1.0 / (n_mask * sigma)
    bank = template_bank(templates, mask, angles_deg)
    best = xp.full((ny, nx), -xp.inf, dtype=xp.float32)
    best_j = xp.zeros((ny, nx), dtype=xp.int32)
    for start in range(0, bank.shape[0], batch):
        chunk = spectra(bank[start : start + batch]) * f_img[None]
        ncc = fft.irfft2(chunk, s=(ny, nx), axes=(-2, -1)).astype(xp.float32) * scale[None]
        # running maximum map by map (contiguous passes; argmax along axis 0 is slow)
        for k in range(ncc.shape[0]):
            better = ncc[k] > best
            xp.copyto(best, ncc[k], where=better)
            xp.copyto(best_j, xp.int32(start + k), where=better)
    # the template's corner sat at the origin: shift so that its centre does
    best = xp.roll(best, (h, h), axis=(0, 1))
    best_j = xp.roll(best_j, (h, h), axis=(0, 1))
    n_angles = len(angles_deg)
    return best, best_j // n_angles, best_j % n_angles


def pick_templates(
    micrograph,
    pixel_size_A: float,
    diameter_A: float,
    templates,
    template_pixel_A: float,
    *,
    ctf: CTFParams | None = None,
    angle_step_deg: float = 10.0,
    threshold: float | None = None,
    threshold_sigma: float = 4.0,
    nms_fraction: float = 0.8,
    mask_fraction: float = 1.1,
    contamination_sigma: float = 3.0,
    variance_ratio: float = 3.0,
    max_picks: int | None = None,
    pixels_per_diameter: float = 16.0,
    n_noise_samples: int = 20000,
    rng: np.random.Generator | int | None = 0,
) -> TemplatePicks:
    """Pick by normalised cross-correlation with ``templates`` (n, b, b) or (b, b).

    Templates (class averages or map projections, protein bright) get the micrograph's
    |CTF| and are searched at in-plane steps of ``angle_step_deg``; the score is the best
    NCC over all of them (:func:`ncc_map`). ``threshold`` is an absolute NCC value; without
    it peaks must exceed the median of the NCC map's background by ``threshold_sigma``
    MAD-based SDs, estimated per micrograph on ``n_noise_samples`` random pixels with discs
    around strong peaks and contamination excluded, so it assumes no particle density.
    The micrograph is Fourier-cropped to ``pixels_per_diameter`` pixels across a particle.
    """
    if pixel_size_A <= 0 or diameter_A <= 0 or template_pixel_A <= 0:
        raise ValueError("pixel sizes and diameter must be > 0")
    if angle_step_deg <= 0:
        raise ValueError(f"angle step must be > 0 (got {angle_step_deg}°)")
    xp = backend.xp()
    binned = bin_and_flip(
        micrograph,
        pixel_size_A,
        diameter_A / pixels_per_diameter,
        ctf=ctf,
        lowpass_A=diameter_A / 10.0,
    )
    p = binned.pixel_size_A
    d_px = diameter_A / p
    box = 2 * int(math.ceil(0.5 * max(1.3, mask_fraction + 0.1) * d_px))
    prepared = prepare_templates(templates, template_pixel_A, p, box, ctf, diameter_A / 10.0)
    mask = _soft_disc(box, 0.5 * mask_fraction * d_px)
    angles = np.arange(0.0, 360.0, angle_step_deg)
    ncc, best_t, best_a = ncc_map(binned.image, prepared, mask, angles)
    ny, nx = ncc.shape
    border = int(math.ceil(d_px / 2.0))
    rows, cols, heights = local_maxima(ncc, nms_fraction * d_px, -np.inf, border)
    cmask = contamination_mask(binned.image, d_px, contamination_sigma)
    in_mask = values_at(cmask, rows, cols).astype(bool)
    if threshold is None:
        rng = np.random.default_rng(rng)
        r = rng.integers(border, ny - border, n_noise_samples)
        c = rng.integers(border, nx - border, n_noise_samples)
        keep = ~values_at(cmask, r, c).astype(bool)
        r, c = r[keep], c[keep]
        med, sd = background_stats(
            values_at(ncc, r, c),
            np.column_stack([r, c]),
            np.column_stack([rows, cols]),
            heights,
            0.6 * d_px,
        )
        threshold = med + threshold_sigma * sd
    found = Candidates(rows, cols, heights, ncc, binned.scale_yx)
    found.reject("contamination", in_mask)
    found.reject("below_threshold", found.heights < threshold)
    spread = local_std(xp.where(cmask, 0.0, binned.image), d_px)
    found.screen_variance(spread, variance_ratio, 1.0 / variance_ratio)
    found.truncate(max_picks)
    rows, cols = found.rows, found.cols
    return TemplatePicks(
        found.xy(),
        found.heights.astype(np.float64),
        found.rejected,
        template_index=values_at(best_t, rows, cols).astype(int),
        angle_deg=angles[values_at(best_a, rows, cols).astype(int)] if rows.size else np.zeros(0),
    )
