"""Blob picker: difference-of-discs (DoG of top-hats) or LoG between a min and max diameter.

Works on raw, noisy micrographs (RELION LoG-style, with these steps):

1. Fourier-crop to ~1/20 of the particle diameter per pixel, CTF phase flip (or contrast
   inversion without a CTF) so that particles are bright, Gaussian low-pass at d/8.
2. Contamination (ice balls, ethane, other objects much larger than a particle) is found
   first, independently of the picks: dense regions above ``contamination_sigma`` robust SDs
   that survive a morphological opening with a disc bigger than a particle. They are painted
   over with the background level and no pick may lie on them.
3. Local normalisation: the local mean (Gaussian window of two diameters) is subtracted
   against ice gradients, and responses are counted in background noise SDs above the
   background's median (or above 0 where that median is negative), both estimated with
   peaks masked out (sigma clipping) so that a threshold means the same at any density.
4. Blob filter for diameters between ``min_diameter_A`` and ``max_diameter_A`` (max over
   kernels, as cryoSPARC's blob picker, each kernel's response first divided by its own
   noise SD so that small and large kernels score in the same units): ``kernel="auto"``
   (default) picks ``"ellipse"`` when max ≥ 1.5 × min and ``"disc"`` otherwise.
   ``"disc"`` — mean inside the particle disc minus the mean of the surrounding annulus,
   Gaussian-softened, which also centres hollow particles; ``"ellipse"`` — the same
   stretched to the projections of a particle min wide and max long seen from random
   directions (:func:`projected_shapes`: rod-like and disc-like, ``n_projections``
   equally likely groups of views each), at axis steps of about width/length radians; the
   micrograph is then sampled and low-passed for the narrowest dimension;
   ``kernel="log"`` — scale-normalised −σ²∇²G with σ = r/√2.
   With ``shape="any"`` (a particle whose shape the user does not know; the CLI's
   default) and no range given, the range is ``any_min_fraction`` × diameter to the
   diameter (the longest dimension), and the response above its median is summed over a
   Gaussian window of ``aggregate_sigma`` × diameter: kernels that fit a part of a
   particle (an end of a rod, a chord of a hollow ring) peak off its centre, the summed
   response peaks once at the centre. ``shape="round"`` is the single round kernel.
5. Peaks with non-maximum suppression at ``nms_fraction`` × diameter (0.8 round, 0.55
   any), kept above ``threshold_sigma`` background noise SDs (3 round; any:
   :func:`any_threshold`, 2 or more where particle-sized cells of bare ice outnumber the
   picks: noise peaks grow with the area, particles' picks do not; or, with ``decoy``, the
   threshold for a chosen false-pick rate from the noise peaks of the contrast-inverted
   micrograph, :class:`DecoyThreshold`); then a
   local-variance test of each pick against the population of picks rejects carbon edges
   (far above the median) and empty areas (far below). Rejected picks are kept by reason in ``Picks.rejected``.

The figure of merit is the filter response in background noise SDs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pipeline import backend
from pipeline.ctf_model import CTFParams
from pipeline.picking.common import (
    Candidates,
    Picks,
    background_noise,
    bin_and_flip,
    dilate,
    erode,
    gaussian_blur,
    local_maxima,
    radial_power,
    robust_stats,
    values_at,
)


def _noise_sd(kernel, noise_power):
    """Relative noise SD of the response to ``kernel`` (an rfft2 half-plane array) when the
    image's noise has the power spectrum ``noise_power`` (same shape): √Σ|K|²·P, the columns
    that stand for two Fourier pixels counted twice. 1 when ``noise_power`` is None."""
    if noise_power is None:
        return 1.0
    xp = backend.xp()
    weight = xp.full(kernel.shape[-1], 2.0, dtype=xp.float32)
    weight[0] = 1.0
    weight[-1] = 1.0
    return float(xp.sqrt(xp.sum(weight[None, :] * kernel * kernel * noise_power)))


def log_response(image, diameters_px: list[float]):
    """Max over scales of the scale-normalised −σ²∇²G response (bright blobs positive);
    ``image`` may be a stack (n, rows, cols)."""
    xp, fft = backend.xp(), backend.fft()
    my, mx = image.shape[-2:]
    ky = xp.fft.fftfreq(my)[:, None]
    kx = xp.fft.rfftfreq(mx)[None, :]
    k2 = (kx * kx + ky * ky).astype(xp.float32)
    spectrum = fft.rfft2(image)
    best = None
    for d in diameters_px:
        sigma = 0.5 * d / math.sqrt(2.0)
        # FT of −σ²∇²G_σ: σ²·4π²k²·exp(−2π²σ²k²)
        kernel = (sigma**2 * 4.0 * math.pi**2) * k2 * xp.exp(-2.0 * math.pi**2 * sigma**2 * k2)
        response = fft.irfft2(spectrum * kernel, s=(my, mx)).astype(xp.float32)
        best = response if best is None else xp.maximum(best, response)
    return best


#: step of the CPU table of 2·J1(x)/x (linear interpolation error < 2e-6)
_JINC_STEP = 0.004


@functools.lru_cache(maxsize=8)
def _jinc_table(x_max: float) -> np.ndarray:
    """2·J1(x)/x at x = 0, ``_JINC_STEP``, … up to ``x_max`` (float32)."""
    from scipy.special import j1

    x = np.arange(int(math.ceil(x_max / _JINC_STEP)) + 2) * _JINC_STEP
    safe = np.where(x > 1e-6, x, 1.0)
    return np.where(x > 1e-6, 2.0 * j1(safe) / safe, 1.0).astype(np.float32)


def _disc_spectrum(k, radius_px: float):
    """Fourier transform of a unit-mean disc of ``radius_px``: 2·J1(2πkR)/(2πkR).

    On CPU from a table (scipy's J1 took two thirds of an elongated search's time)."""
    xp = backend.xp()
    x = 2.0 * math.pi * k * radius_px
    if backend.device() == "gpu":
        from cupyx.scipy.special import j1

        safe = xp.where(x > 1e-6, x, 1.0)
        return xp.where(x > 1e-6, 2.0 * j1(safe) / safe, 1.0)
    x_max = float(x.max())
    # tables at powers of two of the largest argument, so that a few serve every kernel
    table = _jinc_table(2.0 ** math.ceil(math.log2(max(x_max, 1.0))))
    position = x * np.float32(1.0 / _JINC_STEP)
    whole = np.floor(position)
    index = whole.astype(np.int32)
    frac = position - whole
    return table[index] * (1.0 - frac) + table[index + 1] * frac


def disc_response(
    image,
    diameters_px: list[float],
    inner: float = 0.9,
    outer: float = 1.3,
    edge: float = 0.075,
    noise_power=None,
):
    """Max over scales of a difference-of-discs filter (a DoG of top-hats).

    For diameter d: mean over a disc of radius ``inner``·d/2 minus the mean over the
    surrounding annulus out to ``outer``·d/2, both softened by a Gaussian of ``edge``·d.
    Unlike the LoG it weighs the whole particle evenly, so hollow particles (rings in
    projection, e.g. apoferritin) peak at their centre rather than on their rim. ``image``
    may be a stack (n, rows, cols).
    """
    xp, fft = backend.xp(), backend.fft()
    my, mx = image.shape[-2:]
    ky = xp.fft.fftfreq(my)[:, None]
    kx = xp.fft.rfftfreq(mx)[None, :]
    k = xp.sqrt(kx * kx + ky * ky)
    spectrum = fft.rfft2(image)
    best = None
    for d in diameters_px:
        r_in, r_out = 0.5 * inner * d, 0.5 * outer * d
        disc_in = _disc_spectrum(k, r_in)
        annulus = (r_out**2 * _disc_spectrum(k, r_out) - r_in**2 * disc_in) / (r_out**2 - r_in**2)
        soft = xp.exp(-2.0 * math.pi**2 * (edge * d) ** 2 * k * k)
        kernel = ((disc_in - annulus) * soft).astype(xp.float32)
        response = fft.irfft2(spectrum * kernel, s=(my, mx)).astype(xp.float32)
        response /= _noise_sd(kernel, noise_power)
        best = response if best is None else xp.maximum(best, response)
    return best


def projected_shapes(
    min_diameter: float, max_diameter: float, n: int = 3, family: str = "both"
) -> list[tuple[float, float]]:
    """(length, width) of the projections of a particle ``max_diameter`` long and
    ``min_diameter`` wide (any unit) seen from random directions: ``n`` quantiles.

    A prolate particle (a rod) seen at angle θ to its axis projects to length
    √((max·sinθ)² + (min·cosθ)²) and width min; an oblate one (a disc) to length max and
    width √((max·cosθ)² + (min·sinθ)²). Over random directions cos θ is uniform on [0, 1],
    so the shapes at cos θ = (i + ½)/n, i = 0…n−1, stand for n equally likely groups of
    views. ``family`` "prolate", "oblate" or "both" (the user gives only a min and a max);
    duplicates are dropped, longest first.
    """
    if family not in ("prolate", "oblate", "both"):
        raise ValueError(f"unknown shape family {family!r} (use prolate, oblate or both)")
    shapes = []
    for i in range(n):
        c = (i + 0.5) / n
        s = math.sqrt(1.0 - c * c)
        if family in ("prolate", "both"):
            shapes.append((math.hypot(max_diameter * s, min_diameter * c), min_diameter))
        if family in ("oblate", "both"):
            shapes.append((max_diameter, math.hypot(max_diameter * c, min_diameter * s)))
    unique = sorted({(round(a, 3), round(b, 3)) for a, b in shapes}, reverse=True)
    return [(float(a), float(b)) for a, b in unique]


def ellipse_response(
    image,
    shapes_px: list[tuple[float, float]],
    n_orientations: int = 0,
    inner: float = 0.9,
    outer: float = 1.3,
    edge: float = 0.075,
    noise_power=None,
):
    """Max over shapes and orientations of an elliptic difference of discs.

    :func:`disc_response` stretched along an axis: for a projection L long and W wide
    ((L, W) in ``shapes_px``), the mean over a uniform ellipse of semi-axes ``inner`` ×
    (L/2, W/2) minus the mean over the elliptic annulus out to ``outer`` × those axes,
    softened by a Gaussian of ``edge`` × W. Sharp-edged like the particle (unlike a
    Gaussian blob), it keeps the frequencies where a thin particle's contrast lies. Each
    shape is tried at ``n_orientations`` axis angles over 180°, or with 0 at steps of about
    W/L radians (so that the kernel's ends stay within W/4 of an elongated particle's ends;
    one angle for a round shape). With ``noise_power`` (the image's noise power spectrum,
    :func:`pipeline.picking.common.radial_power`) each response is divided by its own noise
    SD before the maximum, so long and short kernels score in the same units. A single
    shape (d, d) is :func:`disc_response`. ``image`` may be a stack (n, rows, cols): each
    kernel is built once and applied to every image.
    """
    xp, fft = backend.xp(), backend.fft()
    my, mx = image.shape[-2:]
    ky = xp.fft.fftfreq(my)[:, None].astype(xp.float32)
    kx = xp.fft.rfftfreq(mx)[None, :].astype(xp.float32)
    spectrum = fft.rfft2(image)
    best = None
    for length, width in shapes_px:
        soft = xp.exp(-2.0 * math.pi**2 * (edge * width) ** 2 * (kx * kx + ky * ky))
        angles = n_orientations
        if angles <= 0:
            angles = 1 if length <= 1.05 * width else math.ceil(math.pi * length / width)
        for i in range(angles):
            theta = math.pi * i / angles
            ku = kx * math.cos(theta) + ky * math.sin(theta)
            kv = -kx * math.sin(theta) + ky * math.cos(theta)
            # a unit-mean ellipse of semi-axes (a, b) is a unit disc at k' = (a·ku, b·kv)
            k = xp.sqrt((0.5 * length * ku) ** 2 + (0.5 * width * kv) ** 2)
            disc_in = _disc_spectrum(k, inner)
            annulus = (outer**2 * _disc_spectrum(k, outer) - inner**2 * disc_in) / (
                outer**2 - inner**2
            )
            kernel = ((disc_in - annulus) * soft).astype(xp.float32)
            response = fft.irfft2(spectrum * kernel, s=(my, mx)).astype(xp.float32)
            response /= _noise_sd(kernel, noise_power)
            best = response if best is None else xp.maximum(best, response)
    return best


def contamination_mask(
    bright,
    diameter_px: float,
    sigma_threshold: float = 3.0,
    open_fraction: float = 0.6,
    dilate_fraction: float = 0.1,
):
    """Pixels of ice/ethane contamination and other large dense objects.

    ``bright`` is the particle-bright binned image, low-passed at a quarter diameter and
    expressed in robust SDs of the field. Pixels above ``sigma_threshold`` form blobs; a
    morphological opening with a disc of radius ``open_fraction`` × diameter removes
    everything particle-sized (even touching pairs) and keeps objects much larger than a
    particle (ice balls, ethane drops), to which a rim of ``dilate_fraction`` × diameter is
    added. Particles touching a contaminant stay outside the mask.
    """
    smooth = gaussian_blur(bright, max(1.0, diameter_px / 4.0))
    step = max(1, smooth.shape[0] // 256)
    field_med, field_sd = robust_stats(smooth[::step, ::step])
    dense = (smooth - field_med) / field_sd > sigma_threshold
    if not bool(dense.any()):
        return dense
    radius = open_fraction * diameter_px
    opened = dilate(erode(dense, radius), radius)
    if not bool(opened.any()):
        return opened
    return dilate(opened, dilate_fraction * diameter_px)


def local_std(image, diameter_px: float):
    """Standard deviation of ``image`` within Gaussian windows of about one diameter."""
    xp = backend.xp()
    sigma = max(1.0, diameter_px / 2.0)
    mean = gaussian_blur(image, sigma)
    return xp.sqrt(xp.maximum(gaussian_blur(image * image, sigma) - mean * mean, 0.0))


#: ``shape="any"``: threshold (background SDs) where a micrograph has
#: ``ANY_CELLS_PER_PICK`` particle-sized cells per pick above it (the 220 Å rod's
#: development micrographs: ~550 cells, ~56 picks at 2, where 2 was chosen)
ANY_THRESHOLD = 2.0
ANY_CELLS_PER_PICK = 10.0
#: exponential scale (SDs) of the tail of the noise peaks' scores in the summed map
#: (development mixture rod1-apo: unmatched picks fall ×1.9 per SD from 2 to 4 SDs)
ANY_TAIL_SD = 1.5


def any_threshold(cells: float, picks_above) -> float:
    """Threshold of the any-shape search on a micrograph of ``cells`` particle-sized cells
    (area / NMS distance²), ``picks_above(t)`` the number of peaks at or above ``t``.

    Noise peaks are a scatter of about one per cell with an exponential tail (scale
    ``ANY_TAIL_SD``), so those above t number ∝ cells·exp(−t/s): the lowest t ≥
    ``ANY_THRESHOLD`` with t ≥ ``ANY_THRESHOLD`` + s·ln(cells / (``ANY_CELLS_PER_PICK`` ·
    picks above t)) keeps their share of the picks at most what it is at the reference
    (false-discovery-like): a larger area alone raises the threshold, more particles on
    it lower it back. (BENCHMARKS.md "pick4")"""
    t = ANY_THRESHOLD
    for _ in range(50):  # t only rises: picks_above falls, the bound rises
        ratio = cells / (ANY_CELLS_PER_PICK * max(picks_above(t), 1))
        bound = ANY_THRESHOLD + ANY_TAIL_SD * math.log(max(ratio, 1.0))
        if bound <= t + 1e-3:
            return t
        t = bound
    return t


@dataclass(frozen=True)
class DecoyThreshold:
    """Per-micrograph threshold of the any-shape search from the micrograph's own noise,
    for a chosen false-pick rate, with a decoy (target–decoy counting, as in proteomics'
    false-discovery control; BENCHMARKS.md "pick5").

    The decoy is the same score map computed, with every data-dependent setting frozen
    (noise spectrum, background level and SD), on the contrast-inverted micrograph. Noise
    is as likely bright as dark, so on bare ice the decoy's peaks are distributed as the
    real map's noise peaks, whatever the noise's spectrum or the ice thickness; near
    particles they are not (the gaps between particles, a hollow particle's inside, the
    dark surroundings look like blobs once inverted). So at each level u the decoy peaks
    within ``exclusion_fraction`` × diameter of a pick above u are left out, with that
    area: the D decoy peaks above u on the A pixels left estimate the noise picks above u
    as D / (1 − D·πR²/A) (R the exclusion radius: the ice under the noise picks' own discs
    counted back). The threshold is the lowest u ≥ ``start_sigma`` (background SDs) where
    that estimate is at most ``false_pick_rate`` × the picks above u
    (Benjamini–Hochberg-like); none: no picks. No particle density and no noise model is
    assumed.
    """

    false_pick_rate: float = 0.05
    start_sigma: float = 2.0
    exclusion_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.false_pick_rate < 1:
            raise ValueError(f"false_pick_rate {self.false_pick_rate} must be in (0, 1)")
        if self.exclusion_fraction <= 0:
            raise ValueError(f"exclusion_fraction {self.exclusion_fraction} must be > 0")


def nearby_maximum(shape, rows, cols, heights, radius_px: float):
    """Map of the highest of ``heights`` (at ``rows``, ``cols``) within ``radius_px`` of
    each pixel (−inf where none): discs painted in ascending order of height."""
    ny, nx = shape
    out = np.full((ny, nx), -np.inf, dtype=np.float64)
    r = int(math.ceil(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = yy * yy + xx * xx < radius_px * radius_px
    for i in np.argsort(heights, kind="stable"):
        y, x = int(rows[i]), int(cols[i])
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, ny), max(x - r, 0), min(x + r + 1, nx)
        window = disc[y0 - y + r : y1 - y + r, x0 - x + r : x1 - x + r]
        out[y0:y1, x0:x1][window] = heights[i]
    return out


def decoy_threshold(
    picks: tuple[np.ndarray, np.ndarray, np.ndarray],
    decoy: tuple[np.ndarray, np.ndarray, np.ndarray],
    search,
    exclusion_px: float,
    options: DecoyThreshold,
) -> float:
    """Threshold (score units) for the candidate ``picks`` (rows, cols, heights) from the
    ``decoy`` map's peaks (rows, cols, heights) on the same grid; ``search`` is the boolean
    map where picks may lie. At each level u, decoy peaks within ``exclusion_px`` of a pick
    above u are left out, and so is that area: the decoy's peaks above u on the rest
    (D), over its area (A), estimate the noise picks above u as F = D / (1 − D·πR²/A)
    (the ice under the noise picks' own discs counted back). See :class:`DecoyThreshold`."""
    rows, cols, heights = (np.asarray(a) for a in picks)
    d_rows, d_cols, d_heights = (np.asarray(a) for a in decoy)
    ascending = np.sort(heights.astype(np.float64))
    candidates = ascending[ascending >= options.start_sigma][::-1]
    if candidates.size == 0:
        return math.inf
    valid = backend.to_numpy(search).astype(bool)
    inside = valid[d_rows, d_cols] if d_rows.size else np.zeros(0, dtype=bool)
    d_heights = d_heights[inside].astype(np.float64)
    above = heights >= options.start_sigma  # lower picks leave nothing out at u ≥ start
    nearest = nearby_maximum(
        valid.shape, rows[above], cols[above], heights[above].astype(np.float64), exclusion_px
    )
    d_near = nearest[d_rows[inside], d_cols[inside]]
    free_levels = np.sort(nearest[valid])  # a pixel is free at level u when its value < u
    n_above = ascending.size - np.searchsorted(ascending, candidates, side="left")
    area = np.searchsorted(free_levels, candidates, side="left").astype(np.float64)
    # decoy peaks above u on the free area at u (counted exactly; pairs (height, near))
    counts = np.array([np.count_nonzero((d_heights >= u) & (d_near < u)) for u in candidates])
    disc = math.pi * exclusion_px**2
    own = np.where(area > 0, counts * disc / np.maximum(area, 1.0), np.inf)
    expected = np.where(own < 1.0, counts / np.maximum(1.0 - own, 1e-9), np.inf)
    expected = np.where(counts == 0, 0.0, expected)
    ok = expected <= options.false_pick_rate * n_above
    return float(candidates[ok].min()) if ok.any() else math.inf


def pick_blobs(
    micrograph,
    pixel_size_A: float,
    diameter_A: float,
    *,
    min_diameter_A: float | None = None,
    max_diameter_A: float | None = None,
    ctf: CTFParams | None = None,
    kernel: str = "auto",
    n_scales: int = 3,
    threshold_sigma: float | None = None,
    nms_fraction: float | None = None,
    contamination_sigma: float = 3.0,
    variance_ratio: float = 3.0,
    empty_ratio: float = 0.85,
    max_picks: int | None = None,
    equal_noise: bool = True,
    n_orientations: int = 0,
    n_projections: int = 2,
    shape_family: str = "both",
    shape: str = "round",
    any_min_fraction: float = 0.25,
    aggregate_sigma: float | None = None,
    decoy: DecoyThreshold | None = None,
) -> Picks:
    """Pick particles of about ``diameter_A`` (Å) on one micrograph (pixel size in Å).

    ``min_diameter_A``/``max_diameter_A`` (Å) bound the particle's projected size (its
    width and length for an elongated particle); ``kernel`` and the steps are in the module
    docstring. ``equal_noise`` divides each kernel's response by its own noise SD before
    the maximum over kernels; ``n_orientations`` axis angles per elongated kernel (0: steps
    of about width/length radians); ``n_projections`` and ``shape_family`` choose the
    elongated kernels (:func:`projected_shapes`). ``threshold_sigma`` is in background
    noise SDs above the background's median (0 where that median is negative); None: 3.0
    for ``shape="round"``, for ``"any"`` :func:`any_threshold` of the micrograph's number
    of particle-sized cells and of the peaks above it (2.0 where there are ≤ 10 cells per
    pick). ``nms_fraction`` (× diameter) None: 0.8
    round, 0.55 any.

    ``shape``: "round" (default) uses the single round kernel at ``diameter_A``, or the
    given min–max range; "any" is for a particle whose shape is not known, with
    ``diameter_A`` its longest dimension: without a range, kernels from
    ``any_min_fraction`` × diameter wide to the diameter long (elongated and round), and
    the response summed over a Gaussian window of ``aggregate_sigma`` × diameter (None:
    0.25 for "any", 0 = off for "round") so that one particle gives one peak, at its
    centre. Chosen on apoferritin and a 220 × 60 Å rod (BENCHMARKS.md "pick3").

    ``decoy``: with ``shape="any"`` and no ``threshold_sigma``, the threshold from the
    micrograph's own noise (:class:`DecoyThreshold`: target–decoy false-pick control)
    instead of :func:`any_threshold`; the filters run on the micrograph and its inverse.

    Returns :class:`Picks` with (x, y) in pixels of ``micrograph`` and a figure of merit.
    """
    if pixel_size_A <= 0 or diameter_A <= 0:
        raise ValueError(f"pixel size ({pixel_size_A} Å) and diameter ({diameter_A} Å) must be > 0")
    micrograph = backend.asarray(micrograph)
    if micrograph.ndim != 2:
        raise ValueError(f"a micrograph must be a 2D image (got shape {tuple(micrograph.shape)})")
    if shape not in ("round", "any"):
        raise ValueError(f"unknown particle shape {shape!r} (use round or any)")
    if shape == "any" and min_diameter_A is None and max_diameter_A is None:
        min_diameter_A = any_min_fraction * diameter_A
    any_shape = shape == "any"
    adaptive = threshold_sigma is None and any_shape
    if threshold_sigma is None:
        threshold_sigma = 3.0
    if nms_fraction is None:
        nms_fraction = 0.55 if any_shape else 0.8
    if aggregate_sigma is None:
        aggregate_sigma = 0.25 if any_shape else 0.0
    dmin = min_diameter_A or diameter_A
    dmax = max_diameter_A or diameter_A
    if dmin > dmax:
        raise ValueError(f"min diameter {dmin} Å is larger than max diameter {dmax} Å")
    if min(micrograph.shape) * pixel_size_A < 3 * dmax:
        raise ValueError(
            f"micrograph ({micrograph.shape[1]}x{micrograph.shape[0]} px) is too small "
            f"for {dmax:.0f} Å particles"
        )
    # sampled and low-passed for the narrowest dimension (thin, elongated particles)
    binned = bin_and_flip(
        micrograph,
        pixel_size_A,
        min(diameter_A / 20.0, dmin / 8.0),
        ctf=ctf,
        lowpass_A=min(diameter_A / 8.0, dmin / 3.0),
    )
    p = binned.pixel_size_A
    d_px = diameter_A / p
    # contamination first (independent of the picks); it is painted over with the
    # background level so that its edges do not ring through the filters
    xp = backend.xp()
    mask = contamination_mask(binned.image, d_px, contamination_sigma)
    image = binned.image
    if bool(mask.any()) and bool((~mask).any()):
        image = xp.where(mask, xp.median(image[~mask]), image)
    # flatten the background (ice gradients) by subtracting a local mean over 2 diameters
    flattened = image - gaussian_blur(image, 2.0 * d_px)
    scales = list(np.linspace(dmin / p, dmax / p, n_scales)) if dmax > dmin else [d_px]
    if kernel == "auto":
        kernel = "ellipse" if dmax >= 1.5 * dmin else "disc"
    noise_power = None
    if equal_noise:
        noise_power = radial_power(backend.fft().rfft2(flattened), flattened.shape)
    use_decoy = adaptive and decoy is not None

    def filtered(images):
        if kernel == "ellipse":
            shapes = projected_shapes(dmin / p, dmax / p, n_projections, shape_family)
            return ellipse_response(images, shapes, n_orientations, noise_power=noise_power)
        if kernel == "log":
            return log_response(images, scales)
        if kernel == "disc":
            return disc_response(images, scales, noise_power=noise_power)
        raise ValueError(f"unknown kernel {kernel!r} (use auto, disc, ellipse or log)")

    # the decoy (below): the same filters on the contrast-inverted micrograph, as one stack
    # so that each kernel is built once
    response = filtered(xp.stack([flattened, -flattened]) if use_decoy else flattened)
    inverted_response = None
    if use_decoy:
        response, inverted_response = response[0], response[1]
    base = 0.0
    if aggregate_sigma > 0:
        # kernels that fit a part of a particle (one end of a rod, a chord of a ring) peak
        # off its centre; the response above its median, summed over a Gaussian window of
        # the particle's size, peaks once, at the particle's centre
        step = max(1, response.shape[0] // 256)
        base, _ = robust_stats(response[::step, ::step])

    def aggregated(raw):
        if aggregate_sigma <= 0:
            return raw
        return gaussian_blur(xp.maximum(raw - base, 0.0), aggregate_sigma * d_px)

    response = aggregated(response)
    border = int(math.ceil(d_px / 2.0))
    rows, cols, heights = local_maxima(response, nms_fraction * d_px, -np.inf, border)
    in_mask = values_at(mask, rows, cols).astype(bool)
    # every kernel has zero mean, but the maximum over several kernels does not: scores
    # count background SDs above the background's median
    level, noise = background_noise(
        response,
        rows[~in_mask],
        cols[~in_mask],
        heights[~in_mask],
        0.6 * d_px,
        border,
        exclude=mask,
    )
    # E[max of zero-mean responses] ≥ 0: a negative median is the particles' own
    # surroundings (the annulus of the kernels around them), not the noise
    level = max(level, 0.0)
    z = (response - level) / noise
    found = Candidates(rows, cols, (heights - level) / noise, z, binned.scale_yx)
    found.reject("contamination", in_mask)
    if use_decoy:
        ny, nx = response.shape
        # decoy peaks are counted where a pick could have left them out: not within the
        # exclusion radius of the border (particles on it give no pick) or of contamination
        reach = int(math.ceil(decoy.exclusion_fraction * d_px))
        search = xp.zeros((ny, nx), dtype=bool)
        search[border + reach : ny - border - reach, border + reach : nx - border - reach] = True
        if bool(mask.any()):
            search &= ~dilate(mask, decoy.exclusion_fraction * d_px)
        d_rows, d_cols, d_heights = local_maxima(
            aggregated(inverted_response), nms_fraction * d_px, -np.inf, border
        )
        threshold_sigma = decoy_threshold(
            (found.rows, found.cols, found.heights),
            (d_rows, d_cols, (d_heights - level) / noise),
            search,
            decoy.exclusion_fraction * d_px,
            decoy,
        )
    elif adaptive:
        ny, nx = response.shape
        cells = (ny - 2 * border) * (nx - 2 * border) / (nms_fraction * d_px) ** 2
        scores = np.sort(found.heights)

        def picks_above(t: float) -> int:
            return int(scores.size - np.searchsorted(scores, t, side="left"))

        threshold_sigma = any_threshold(cells, picks_above)
    found.reject("below_threshold", found.heights < threshold_sigma)
    # contamination is already handled; empty areas: a particle adds its own variance to the
    # noise, bare ice does not
    found.screen_variance(local_std(flattened, d_px), variance_ratio, empty_ratio)
    found.truncate(max_picks)
    return Picks(found.xy(), found.heights.astype(np.float64), found.rejected)
