"""Pieces shared by the blob and template pickers: Fourier binning, CTF phase flip,
local normalisation, non-maximum suppression and contamination/variance screens.

Everything runs on the active :mod:`pipeline.backend` device. Images are indexed
[row, column] = [y, x]; pick coordinates are (x, y) = (column, row) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from pipeline import backend
from pipeline.ctf_model import CTFParams, chi, ctf_from_chi


def ndimage() -> ModuleType:
    """scipy.ndimage on CPU, cupyx.scipy.ndimage on GPU."""
    if backend.device() == "gpu":
        import cupyx.scipy.ndimage

        return cupyx.scipy.ndimage
    import scipy.ndimage

    return scipy.ndimage


@dataclass
class Picks:
    """Picks on one micrograph: centres in pixels of the input micrograph and a score each."""

    coords_px: np.ndarray  # (n, 2) [x = column, y = row]
    fom: np.ndarray  # (n,) figure of merit (higher is better)
    rejected: dict[str, np.ndarray] = field(default_factory=dict)  # reason -> (m, 2) coords

    def __len__(self) -> int:
        return len(self.fom)


class Candidates:
    """Peaks on a binned score map on their way to becoming picks.

    Holds (rows, cols, heights) in binned pixels, best first; :meth:`reject` drops some and
    keeps their positions under a reason (``Picks.rejected``); :meth:`xy` turns binned
    indices into (x, y) pixels of the input micrograph, with sub-pixel offsets from
    ``score_map``. Fourier cropping keeps pixel 0 at position 0: binned index j is input
    pixel j·scale.
    """

    def __init__(self, rows, cols, heights, score_map, scale_yx: tuple[float, float]):
        self.rows, self.cols, self.heights = rows, cols, heights
        self.score_map = score_map
        self.scale_yx = scale_yx
        self.rejected: dict[str, np.ndarray] = {}

    def xy(self, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
        rows = self.rows if rows is None else rows
        cols = self.cols if cols is None else cols
        dy, dx = subpixel_offsets(self.score_map, rows, cols)
        sy, sx = self.scale_yx
        return np.stack([(cols + dx) * sx, (rows + dy) * sy], axis=1).reshape(-1, 2)

    def reject(self, reason: str, bad: np.ndarray) -> None:
        self.rejected[reason] = self.xy(self.rows[bad], self.cols[bad])
        keep = ~np.asarray(bad, dtype=bool)
        self.rows, self.cols, self.heights = self.rows[keep], self.cols[keep], self.heights[keep]

    def screen_variance(self, spread, high_ratio: float, low_ratio: float) -> None:
        """Reject picks whose local SD (``spread`` map) is above ``high_ratio`` × the
        median over the picks (carbon edges and other strong steps) or below ``low_ratio``
        × that median (empty areas); only with more than 8 picks, so a median means
        something."""
        if self.rows.size <= 8:
            return
        values = values_at(spread, self.rows, self.cols)
        vmed = float(np.median(values))
        high = values > high_ratio * vmed
        low = values < low_ratio * vmed
        self.reject("high_variance", high)
        self.reject("empty", low[~high])

    def truncate(self, max_picks: int | None) -> None:
        if max_picks is not None:
            self.rows, self.cols = self.rows[:max_picks], self.cols[:max_picks]
            self.heights = self.heights[:max_picks]


@dataclass
class Binned:
    """A Fourier-cropped micrograph and the factors back to the input pixel grid."""

    image: object  # (my, mx) float32 on the active device, particles bright
    spectrum: object  # rfft2 of ``image`` (kept for further filtering)
    scale_yx: tuple[float, float]  # input pixels per binned pixel along (y, x)
    pixel_size_A: float  # mean binned pixel size in Å


def _even(n: float) -> int:
    """An even FFT-friendly size (factors 2, 3, 5) at or just above ``n``."""
    import scipy.fft

    size = max(2, 2 * int(round(n / 2.0)))
    while True:
        size = scipy.fft.next_fast_len(size, real=True)
        if size % 2 == 0:
            return size
        size += 1


def bin_and_flip(
    micrograph,
    pixel_size_A: float,
    target_pixel_A: float,
    ctf: CTFParams | None = None,
    lowpass_A: float | None = None,
) -> Binned:
    """Fourier-crop ``micrograph`` to about ``target_pixel_A`` and make particles bright.

    With ``ctf`` the spectrum is phase-flipped (multiplied by sign(CTF)), which makes the
    particles' low-resolution image |CTF|·projection, i.e. bright; without it the image is
    negated (underfocus images show protein dark at low resolution). ``lowpass_A`` applies a
    Gaussian low-pass whose amplitude is 1/2 at 1/lowpass_A.
    """
    xp, fft = backend.xp(), backend.fft()
    image = backend.asarray(micrograph, dtype=xp.float32)
    ny, nx = image.shape
    factor = max(1.0, target_pixel_A / pixel_size_A)
    my, mx = min(ny, _even(ny / factor)), min(nx, _even(nx / factor))
    spectrum = fft.rfft2(image - image.mean())
    half = my // 2
    cropped = xp.concatenate([spectrum[:half, : mx // 2 + 1], spectrum[ny - half :, : mx // 2 + 1]])
    # physical frequencies of the cropped bins (1/Å): index / (n · pixel)
    ky = xp.fft.fftfreq(my, d=1.0)[:, None] * (my / (ny * pixel_size_A))
    kx = xp.fft.rfftfreq(mx, d=1.0)[None, :] * (mx / (nx * pixel_size_A))
    if ctf is not None:
        sign = xp.sign(ctf_from_chi(chi(kx, ky, ctf), ctf.amplitude_contrast))
        cropped = cropped * sign.astype(xp.float32)
    else:
        cropped = -cropped
    if lowpass_A:
        k2 = kx * kx + ky * ky
        cropped = cropped * xp.exp(-math.log(2.0) * k2 * lowpass_A**2).astype(xp.float32)
    cropped[0, 0] = 0
    binned = fft.irfft2(cropped, s=(my, mx)).astype(xp.float32) * (my * mx) / (ny * nx)
    scale = (ny / my, nx / mx)
    return Binned(binned, cropped, scale, pixel_size_A * 0.5 * (scale[0] + scale[1]))


def radial_power(spectrum, shape: tuple[int, int]):
    """Ring average of |``spectrum``|² (the rfft2 of an image of ``shape`` (rows, columns)),
    spread back over the 2D half-plane: the power spectrum of a stationary background, in
    rings one Fourier pixel wide along the shorter axis (the zero ring takes its
    neighbour's value)."""
    xp = backend.xp()
    ny, nx = shape
    n = min(ny, nx)
    ky = xp.fft.fftfreq(ny)[:, None] * n
    kx = xp.fft.rfftfreq(nx)[None, :] * n
    ring = xp.rint(xp.sqrt(kx * kx + ky * ky)).astype(xp.int64)
    power = (spectrum.real**2 + spectrum.imag**2).astype(xp.float64)
    sums = xp.bincount(ring.ravel(), weights=power.ravel())
    counts = xp.bincount(ring.ravel())
    mean = sums / xp.maximum(counts, 1)
    mean[0] = mean[1] if mean.size > 1 else 1.0
    positive = mean[mean > 0]
    floor = float(positive.min()) if positive.size else 1.0
    return xp.maximum(mean, floor)[ring]


def gaussian_blur(image, sigma_px: float):
    """Gaussian blur via FFT (periodic boundary; callers keep features away from edges)."""
    xp, fft = backend.xp(), backend.fft()
    my, mx = image.shape
    ky = xp.fft.fftfreq(my)[:, None]
    kx = xp.fft.rfftfreq(mx)[None, :]
    kernel = xp.exp(-2.0 * math.pi**2 * sigma_px**2 * (kx * kx + ky * ky)).astype(xp.float32)
    return fft.irfft2(fft.rfft2(image) * kernel, s=image.shape).astype(xp.float32)


def robust_stats(values) -> tuple[float, float]:
    """Median and MAD-based standard deviation of a 1D array (numpy or cupy)."""
    v = backend.to_numpy(values).astype(np.float64).ravel()
    if v.size == 0:
        return 0.0, 1.0
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return med, mad if mad > 0 else float(v.std() or 1.0)


def local_maxima(response, radius_px: float, threshold: float, border_px: int):
    """Peaks of ``response`` above ``threshold`` that are the maximum within ``radius_px``.

    Greedy non-maximum suppression on a disc: candidate maxima of a square filter are
    visited by decreasing height and any within ``radius_px`` of a kept one are dropped.
    Returns (rows, cols, heights) as numpy arrays.
    """
    xp, ndi = backend.xp(), ndimage()
    size = max(3, int(2 * math.floor(radius_px * 0.7) + 1))
    maxed = ndi.maximum_filter(response, size=size, mode="constant", cval=-np.inf)
    peak = (response == maxed) & (response > threshold)
    if border_px > 0:
        peak[:border_px, :] = False
        peak[-border_px:, :] = False
        peak[:, :border_px] = False
        peak[:, -border_px:] = False
    rows, cols = (backend.to_numpy(a) for a in xp.nonzero(peak))
    heights = backend.to_numpy(response[peak]) if rows.size else np.zeros(0)
    order = np.argsort(-heights, kind="stable")
    rows, cols, heights = rows[order], cols[order], heights[order]
    return _suppress(rows, cols, heights, radius_px)


def _suppress(rows: np.ndarray, cols: np.ndarray, heights: np.ndarray, radius_px: float):
    """Greedy disc NMS on candidates sorted by decreasing height (grid-hashed, O(n))."""
    if rows.size == 0:
        return rows, cols, heights
    cell = max(radius_px, 1.0)
    grid: dict[tuple[int, int], list[int]] = {}
    keep: list[int] = []
    r2 = radius_px * radius_px
    for i in range(rows.size):
        y, x = float(rows[i]), float(cols[i])
        gy, gx = int(y // cell), int(x // cell)
        clash = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for j in grid.get((gy + dy, gx + dx), ()):
                    if (rows[j] - y) ** 2 + (cols[j] - x) ** 2 < r2:
                        clash = True
                        break
                if clash:
                    break
            if clash:
                break
        if not clash:
            keep.append(i)
            grid.setdefault((gy, gx), []).append(i)
    k = np.asarray(keep, dtype=np.int64)
    return rows[k], cols[k], heights[k]


def values_at(image, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``image[rows, cols]`` as a numpy array (indices given as numpy arrays)."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float64)
    r, c = backend.asarray(np.asarray(rows)), backend.asarray(np.asarray(cols))
    return backend.to_numpy(image[r, c])


def subpixel_offsets(image, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak offsets (dy, dx) in [−0.5, 0.5] from a parabola through 3 samples."""
    if len(rows) == 0:
        return np.zeros(0), np.zeros(0)
    ny, nx = image.shape
    r = np.clip(np.asarray(rows), 1, ny - 2)
    c = np.clip(np.asarray(cols), 1, nx - 2)
    centre = values_at(image, r, c)

    def offset(minus: np.ndarray, plus: np.ndarray) -> np.ndarray:
        curvature = minus - 2.0 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(curvature < 0, 0.5 * (minus - plus) / curvature, 0.0)
        return np.clip(np.nan_to_num(d), -0.5, 0.5)

    dy = offset(values_at(image, r - 1, c), values_at(image, r + 1, c))
    dx = offset(values_at(image, r, c - 1), values_at(image, r, c + 1))
    return dy, dx


def _disc_count(mask, radius_px: float):
    """Number of ``mask`` pixels within ``radius_px`` of every pixel (FFT convolution)."""
    xp, fft = backend.xp(), backend.fft()
    ny, nx = mask.shape
    yy = xp.fft.fftfreq(ny, d=1.0 / ny)[:, None]
    xx = xp.fft.fftfreq(nx, d=1.0 / nx)[None, :]
    disc = ((yy * yy + xx * xx) <= radius_px * radius_px).astype(xp.float32)
    counts = fft.irfft2(fft.rfft2(mask.astype(xp.float32)) * fft.rfft2(disc), s=(ny, nx))
    return counts, float(disc.sum())


def dilate(mask, radius_px: float):
    """Binary dilation by a disc (FFT-based: fast for large discs, same code on GPU)."""
    counts, _ = _disc_count(mask, radius_px)
    return counts > 0.5


def erode(mask, radius_px: float):
    """Binary erosion by a disc (FFT-based); the outside of the image counts as empty."""
    counts, area = _disc_count(mask, radius_px)
    return counts > area - 0.5


def background_noise(
    response,
    rows: np.ndarray,
    cols: np.ndarray,
    heights: np.ndarray,
    radius_px: float,
    border_px: int,
    clip_sigma: float = 2.0,
    iterations: int = 5,
    exclude=None,
) -> tuple[float, float]:
    """Median and noise SD of a detection map's background, excluding discs around strong
    peaks (sigma clipping).

    A robust SD over the whole map is inflated by the particles themselves in crowded
    fields; here peaks more than ``clip_sigma`` × the current SD above the current median
    are masked with discs of ``radius_px`` and the median and MAD-based SD of the remaining
    pixels are taken, a few times over. This keeps thresholds in units of the background
    noise whatever the particle density.
    """
    xp = backend.xp()
    ny, nx = response.shape
    inner = xp.zeros((ny, nx), dtype=bool)
    inner[border_px : ny - border_px, border_px : nx - border_px] = True
    if exclude is not None:
        inner &= ~exclude
    med, sd = robust_stats(response[inner])
    for _ in range(iterations):
        strong = heights > med + clip_sigma * sd
        marks = xp.zeros((ny, nx), dtype=bool)
        if strong.any():
            marks[backend.asarray(rows[strong]), backend.asarray(cols[strong])] = True
            marks = dilate(marks, radius_px)
        background = response[inner & ~marks]
        if background.size < 100:
            break
        med_new, sd_new = robust_stats(background)
        if sd_new <= 0:
            break
        med, sd = med_new, sd_new
    return med, sd


def background_stats(
    values: np.ndarray,
    points: np.ndarray,
    peaks: np.ndarray,
    heights: np.ndarray,
    radius_px: float,
    clip_sigma: float = 2.0,
    iterations: int = 5,
) -> tuple[float, float]:
    """Median and MAD-based SD of a score map's background from samples.

    ``values`` are the score at ``points`` (m, 2) [row, col]; samples within ``radius_px``
    of a peak (``peaks`` (n, 2) [row, col], ``heights`` (n,)) standing more than
    ``clip_sigma`` SDs above the current median are dropped, and the estimate repeated
    (sigma clipping), so particles do not inflate the noise whatever their density.
    """
    from scipy.spatial import cKDTree

    values = np.asarray(values, dtype=np.float64)
    med, sd = robust_stats(values)
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    for _ in range(iterations):
        strong = peaks[np.asarray(heights) > med + clip_sigma * sd]
        if len(strong) == 0:
            break
        dist, _ = cKDTree(strong).query(points, distance_upper_bound=radius_px)
        background = values[~np.isfinite(dist)]
        if background.size < 100:
            break
        new = robust_stats(background)
        if new == (med, sd):
            break
        med, sd = new
    return med, sd
