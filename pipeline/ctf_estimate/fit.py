"""Defocus and astigmatism from a micrograph's averaged power spectrum.

1. Power spectrum P of overlapping tiles (:mod:`pipeline.ctf_estimate.spectrum`), divided by
   a smooth rotational profile to flatten its dynamic range (Pn).
2. 1D search: the rotational average of Pn between ``min_resolution_A`` and the high-res
   limit is fitted, for each trial defocus (and phase shift), by the linear model
   B(k) + E(k)·CTF²(k) with B (background) and E (envelope) piecewise linear in k; the
   defocus with the best R² wins and is refined by a bounded scalar search. The model
   CTF² is averaged within each radial bin like the data, so undersampled rings do not
   alias. Fitting background and envelope jointly with the CTF avoids a separate
   background-subtraction step whose errors bias the defocus.
3. 2D refinement: the background-subtracted spectrum, whitened per radius,
   S = (Pn − B)/σ(k), is compared with CTF²(k, θ) by normalised cross-correlation over
   the fit annulus (dividing by the 1D envelope E instead fails when astigmatism smears
   the rotational average). Defocus is parameterised as
   Δf(α) = m + a₁·cos 2α + a₂·sin 2α (mean, astigmatism components), which is smooth
   even at zero astigmatism; a coarse grid over (a₁, a₂) seeds a Nelder–Mead search.
   The high-res limit of the annulus keeps at least three samples per Thon ring. The
   seeds are scored and refined on the part below 7 Å first, then refined on the whole
   annulus. With ``phase_shift`` the best three phases of the 1D search are each refined
   in 2D and the best correlation wins.
4. Fit resolution: correlation of Pn with the fitted CTF² in shells of two rings
   (equal-phase shells, so astigmatism does not blur them); the resolution is the outer
   edge of the last shell before the correlation (running mean over three shells) drops
   below 0.3 for two shells in a row (cryoSPARC's threshold). Figure of merit: the 2D correlation over the fit annulus.

Output follows RELION/CTFFIND: defocus U ≥ V in Å (underfocus positive), angle of the U
axis from the image X axis in degrees, in (−90, 90].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cryofac.errors import CryofacError
from pipeline.ctf_estimate.spectrum import tile_power_spectrum
from pipeline.ctf_model import CTFParams, electron_wavelength_A


class CTFEstimateError(CryofacError):
    """A micrograph cannot be fitted (too small, constant, non-finite, no Thon rings)."""


@dataclass
class CTFEstimate:
    """Fitted CTF of one micrograph and the diagnostics the plots need."""

    params: CTFParams  # normalised: U ≥ V, angle in (−90, 90]
    max_resolution_A: float  # rlnCtfMaxResolution
    figure_of_merit: float  # rlnCtfFigureOfMerit (2D correlation over the fit annulus)
    fit_range_A: tuple[float, float]  # (low, high) resolution of the 2D fit annulus
    pixel_size_A: float
    tile: int
    spectrum: np.ndarray = field(repr=False)  # whitened S on the rfft grid (tile, tile//2+1)
    shell_k_per_A: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    shell_cc: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    profile_k_per_A: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    profile: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


class _Grid:
    """Frequencies of the rfft grid of one tile, in 1/Å, flattened where useful."""

    def __init__(self, tile: int, pixel_size_A: float):
        ky = np.fft.fftfreq(tile, d=pixel_size_A)[:, None]
        kx = np.fft.rfftfreq(tile, d=pixel_size_A)[None, :]
        self.tile = tile
        self.pixel_size_A = pixel_size_A
        self.dk = 1.0 / (tile * pixel_size_A)
        self.k2 = kx * kx + ky * ky
        self.k = np.sqrt(self.k2)
        alpha = np.arctan2(np.broadcast_to(ky, self.k.shape), np.broadcast_to(kx, self.k.shape))
        self.cos2 = np.cos(2 * alpha)
        self.sin2 = np.sin(2 * alpha)


def _chi(k2, defocus_A, lam, cs_A, phase_rad):
    return math.pi * lam * defocus_A * k2 - 0.5 * math.pi * cs_A * lam**3 * k2 * k2 + phase_rad


def _ctf2(chi, amplitude_contrast):
    w = math.asin(amplitude_contrast)
    return np.sin(chi + w) ** 2


def _hat_basis(k: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear (hat) functions on ``knots`` evaluated at ``k`` (clamped), (len, K)."""
    kk = np.clip(k, knots[0], knots[-1])
    out = np.zeros(kk.shape + (len(knots),))
    idx = np.clip(np.searchsorted(knots, kk) - 1, 0, len(knots) - 2)
    t = (kk - knots[idx]) / (knots[idx + 1] - knots[idx])
    np.put_along_axis(out, idx[..., None], (1 - t)[..., None], axis=-1)
    np.put_along_axis(out, (idx + 1)[..., None], t[..., None], axis=-1)
    return out


def _alias_limit(defocus_A: float, lam: float, cs_A: float, dk: float, k_max: float) -> float:
    """Highest k (1/Å) where Thon rings of ``defocus_A`` span ≥ 3 samples of spacing dk."""
    ks = np.linspace(dk, k_max, 2000)
    slope = np.abs(2 * lam * defocus_A * ks - 2 * cs_A * lam**3 * ks**3)  # d(χ/π)/dk
    period = 1.0 / np.maximum(slope, 1e-12)
    ok = period >= 3 * dk
    if ok.all():
        return k_max
    return float(ks[max(np.argmin(ok) - 1, 0)])


TILE_SIZES = (512, 768, 1024, 1536, 2048)


def estimate_ctf(
    image: np.ndarray,
    pixel_size_A: float,
    *,
    tile: int | None = None,
    **options,
) -> CTFEstimate:
    """Estimate defocus U/V (Å), astigmatism angle (°) and optionally phase shift (°).

    ``tile=None`` (default) chooses the power-spectrum tile: a first fit with 512² tiles;
    if its Thon rings are too dense for 512 samples to reach the high-resolution limit
    (high defocus), the fit is repeated with the smallest larger tile (768–2048, at most
    the micrograph's size) that resolves them. Other options: see :func:`fit_ctf`.
    """
    if tile is not None:
        return fit_ctf(image, pixel_size_A, tile=tile, **options)
    first = fit_ctf(image, pixel_size_A, tile=512, **options)
    img_min = min(np.shape(image)[-2:])
    k_hi = 1.0 / first.fit_range_A[1]
    k_want = _k_high(pixel_size_A, options.get("max_resolution_A"))
    if k_hi >= 0.98 * k_want:
        return first
    p = first.params
    lam = electron_wavelength_A(p.voltage_kV)
    cs_A = p.cs_mm * 1e7
    for size in TILE_SIZES[1:]:
        if size > img_min:
            break
        limit = _alias_limit(p.defocus_u_A + 200.0, lam, cs_A, 1.0 / (size * pixel_size_A), k_want)
        if limit >= 0.98 * k_want or size == max(t for t in TILE_SIZES if t <= img_min):
            try:
                return fit_ctf(image, pixel_size_A, tile=size, **options)
            except CTFEstimateError:
                return first
    return first


def _k_high(pixel_size_A: float, max_resolution_A: float | None) -> float:
    k_hi = 1.0 / (max_resolution_A if max_resolution_A else max(4.0, 2.5 * pixel_size_A))
    return min(k_hi, 0.95 * 0.5 / pixel_size_A)


def fit_ctf(
    image: np.ndarray,
    pixel_size_A: float,
    *,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    defocus_range_A: tuple[float, float] = (3000.0, 50000.0),
    min_resolution_A: float = 30.0,
    max_resolution_A: float | None = None,
    tile: int = 512,
    phase_shift: bool = False,
    max_astigmatism_A: float = 3000.0,
    min_figure_of_merit: float = 0.08,
) -> CTFEstimate:
    """Fit the CTF with a fixed power-spectrum ``tile`` (pixels).

    ``image``: micrograph (rows, cols) on host or device; ``max_resolution_A`` defaults to
    max(4 Å, 2.5 pixels). Raises :class:`CTFEstimateError` for unusable input, including
    spectra without Thon rings (figure of merit below ``min_figure_of_merit``). When no
    resolution shell reaches a correlation of 0.3 the fit resolution is reported as
    ``min_resolution_A``.

    The stages, in order: :func:`_spectrum` (tiles, flattened), :class:`_Search1D`
    (background + envelope + CTF² on the rotational average, exhaustive then bounded),
    :func:`_refine_2d` (astigmatism on the whitened 2D spectrum), :func:`_quality`
    (shell correlations, fit resolution).
    """
    img = _check_image(image)
    if pixel_size_A <= 0:
        raise CTFEstimateError(f"pixel size must be positive (got {pixel_size_A} Å)")
    spec = _spectrum(img, pixel_size_A, tile)
    optics = _Optics(voltage_kV, cs_mm, amplitude_contrast)
    k_hi = _k_high(pixel_size_A, max_resolution_A)
    k_lo = 1.0 / min_resolution_A
    if k_lo >= k_hi:
        raise CTFEstimateError(
            f"resolution range {min_resolution_A} – {1 / k_hi:.2f} Å is empty at this pixel size"
        )
    search = _Search1D(spec, k_lo, k_hi, optics)
    lo, hi = defocus_range_A
    phases = np.radians(np.arange(0.0, 180.0, 10.0)) if phase_shift else np.array([0.0])
    results = []
    for d1, ph1, coef in search.best_starts(lo, hi, phases, 3 if phase_shift else 1):
        fit = _refine_2d(spec, search, coef, d1, ph1, k_lo, k_hi, max_astigmatism_A, phase_shift)
        results.append((fit, ph1, coef))
    fit, ph1, coef = max(results, key=lambda r: r[0].fom)
    m, a1, a2 = (float(v) for v in fit.x[:3])
    ph = float(fit.x[3]) if phase_shift else ph1
    h = math.hypot(a1, a2)
    angle = 0.5 * math.degrees(math.atan2(a2, a1))
    params = CTFParams(
        m + h,
        m - h,
        angle,
        voltage_kV=voltage_kV,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=math.degrees(ph) % 180.0 if phase_shift else 0.0,
    ).normalised()
    shell_k, shell_cc, resolution = _quality(spec, (m, a1, a2, ph), k_lo, optics)
    if fit.fom < min_figure_of_merit:
        raise CTFEstimateError(
            f"no Thon rings found (figure of merit {fit.fom:.3f} < {min_figure_of_merit}): "
            "not a micrograph, or empty/garbage data"
        )
    if not math.isfinite(resolution):
        resolution = float(min_resolution_A)  # rings fitted, but no shell above 0.3
    return CTFEstimate(
        params=params,
        max_resolution_A=resolution,
        figure_of_merit=fit.fom,
        fit_range_A=(1.0 / k_lo, 1.0 / fit.k_fit_hi),
        pixel_size_A=pixel_size_A,
        tile=spec.grid.tile,
        spectrum=fit.whitened(spec.pn),
        shell_k_per_A=shell_k,
        shell_cc=shell_cc,
        profile_k_per_A=search.k_bins,
        profile=search.envelope_normalised(coef),
    )


class _Optics:
    """Wavelength (Å), Cs (Å) and amplitude contrast of the fitted CTF."""

    def __init__(self, voltage_kV: float, cs_mm: float, amplitude_contrast: float):
        self.lam = electron_wavelength_A(voltage_kV)
        self.cs_A = cs_mm * 1e7
        self.amplitude_contrast = amplitude_contrast


@dataclass
class _Spectrum:
    """Stage 1: the tiled power spectrum divided by a smooth rotational profile (Pn)."""

    grid: _Grid
    pn: np.ndarray  # flattened power spectrum on the rfft grid
    rbin: np.ndarray  # 1-sample radial bin of every grid point
    counts: np.ndarray  # grid points per radial bin

    @property
    def nb(self) -> int:
        return len(self.counts)


def _check_image(image):
    img = np.asarray(image) if not hasattr(image, "get") else image
    if img.ndim != 2:
        raise CTFEstimateError(f"micrograph must be 2D (got shape {tuple(img.shape)})")
    if min(img.shape) < 128:
        raise CTFEstimateError(f"micrograph too small for CTF fitting ({img.shape}, need ≥ 128²)")
    return img


def _spectrum(img, pixel_size_A: float, tile: int) -> _Spectrum:
    """Power spectrum of overlapping tiles, flattened by a smooth rotational profile."""
    ps = tile_power_spectrum(img, tile)
    if not np.all(np.isfinite(ps)):
        raise CTFEstimateError("micrograph holds NaN or infinite values")
    if float(ps.sum()) <= 0:
        raise CTFEstimateError("micrograph is constant: no power spectrum to fit")
    grid = _Grid(ps.shape[0], pixel_size_A)
    rbin = np.rint(grid.k / grid.dk).astype(int)
    nb = int(rbin.max()) + 1
    counts = np.bincount(rbin.ravel(), minlength=nb)
    radial = np.bincount(rbin.ravel(), ps.ravel(), minlength=nb) / np.maximum(counts, 1)
    logr = np.log(np.maximum(radial, radial[radial > 0].min()))
    kernel = np.ones(17) / 17
    smooth = np.exp(np.convolve(np.pad(logr, 8, mode="edge"), kernel, mode="valid"))
    return _Spectrum(grid, ps / smooth[rbin], rbin, counts)


class _Search1D:
    """Stage 2: defocus (and phase) from the rotational average of Pn in [k_lo, k_hi].

    The profile on 1-sample bins is fitted by B(k) + E(k)·CTF²(k), B and E piecewise
    linear on nine knots; the score is R².
    """

    def __init__(self, spec: _Spectrum, k_lo: float, k_hi: float, optics: _Optics):
        grid = spec.grid
        self.optics = optics
        b_lo, b_hi = int(math.ceil(k_lo / grid.dk)), int(math.floor(k_hi / grid.dk))
        prof_sum = np.bincount(spec.rbin.ravel(), spec.pn.ravel(), minlength=spec.nb)
        bins = np.arange(b_lo, b_hi + 1)
        self.profile = prof_sum[bins] / np.maximum(spec.counts[bins], 1)
        self.k_bins = bins * grid.dk
        sub = (np.arange(6) + 0.5) / 6 - 0.5
        k_sub = (bins[:, None] + sub[None, :]) * grid.dk
        self.k2_sub = k_sub**2
        self.knots = np.linspace(self.k_bins[0], self.k_bins[-1], 9)
        self.hat = _hat_basis(self.k_bins, self.knots)
        self.n_hat = self.hat.shape[1]
        self.tss = float(np.sum((self.profile - self.profile.mean()) ** 2))

    def score(self, defocus: float, phase: float) -> tuple[float, np.ndarray]:
        """R² of the best background + envelope model, and its coefficients."""
        o = self.optics
        c2 = _ctf2(_chi(self.k2_sub, defocus, o.lam, o.cs_A, phase), o.amplitude_contrast)
        c2 = c2.mean(axis=1)
        design = np.hstack([self.hat, self.hat * c2[:, None]])
        coef, *_ = np.linalg.lstsq(design, self.profile, rcond=None)
        rss = float(np.sum((design @ coef - self.profile) ** 2))
        return 1.0 - rss / self.tss, coef

    def best_starts(self, lo: float, hi: float, phases: np.ndarray, n: int):
        """The ``n`` best (defocus, phase, coefficients): 100 Å grid, then bounded search."""
        from scipy.optimize import minimize_scalar

        trials = np.arange(lo, hi + 1.0, 100.0)
        per_phase = []
        for ph in phases:
            scores = [self.score(float(d), float(ph))[0] for d in trials]
            j = int(np.argmax(scores))
            per_phase.append((scores[j], float(trials[j]), float(ph)))
        per_phase.sort(key=lambda t: -t[0])
        starts = []
        for _, d_start, ph1 in per_phase[:n]:
            res = minimize_scalar(
                lambda d, ph=ph1: -self.score(d, ph)[0],
                bounds=(max(lo, d_start - 150.0), min(hi, d_start + 150.0)),
                method="bounded",
                options={"xatol": 0.5},
            )
            d1 = float(res.x)
            starts.append((d1, ph1, self.score(d1, ph1)[1]))
        return starts

    def background(self, k: np.ndarray, coef: np.ndarray) -> np.ndarray:
        return _hat_basis(k, self.knots) @ coef[: self.n_hat]

    def envelope_normalised(self, coef: np.ndarray) -> np.ndarray:
        """(profile − B) / E: the 1D profile the plots draw against CTF²."""
        hat, n_hat = self.hat, self.n_hat
        envelope = hat @ coef[n_hat:]
        return (self.profile - hat @ coef[:n_hat]) / np.where(np.abs(envelope) > 0, envelope, 1.0)


@dataclass
class _Fit2D:
    x: np.ndarray  # mean defocus, astigmatism components a₁, a₂ (Å) [, phase (rad)]
    fom: float  # 2D correlation over the fit annulus
    k_fit_hi: float
    mask: np.ndarray  # fit annulus on the rfft grid
    good: np.ndarray  # samples of the annulus with a finite whitened value
    s_vals: np.ndarray  # whitened spectrum S at those samples

    def whitened(self, pn: np.ndarray) -> np.ndarray:
        """S on the whole rfft grid, zero outside the fit annulus."""
        spectrum = np.zeros_like(pn)
        filled = np.zeros(self.mask.sum())
        filled[self.good] = self.s_vals
        spectrum[self.mask] = filled
        return spectrum


def _nelder_mead(cc_2d, x0: list[float], step: float, phase_shift: bool):
    """Maximise ``cc_2d`` from ``x0`` with an initial simplex of ``step`` Å (10° phase)."""
    from scipy.optimize import minimize

    simplex = [x0]
    steps = [step, step, step] + ([math.radians(10)] if phase_shift else [])
    for i, st in enumerate(steps):
        v = list(x0)
        v[i] += st
        simplex.append(v)
    opt = minimize(
        lambda x: -cc_2d(x),
        np.array(x0),
        method="Nelder-Mead",
        options={
            "initial_simplex": np.array(simplex),
            "xatol": 0.2,
            "fatol": 1e-7,
            "maxiter": 2000,
        },
    )
    return opt.x, -float(opt.fun)


def _refine_2d(
    spec: _Spectrum,
    search: _Search1D,
    coef: np.ndarray,
    d1: float,
    ph1: float,
    k_lo: float,
    k_hi: float,
    max_astigmatism_A: float,
    phase_shift: bool,
) -> _Fit2D:
    """Stage 3: 2D refinement on the whitened spectrum S = (Pn − B)/σ from a 1D start."""
    grid, o = spec.grid, search.optics
    lam, cs_A = o.lam, o.cs_A
    k_fit_hi = min(k_hi, _alias_limit(d1 + max_astigmatism_A / 2, lam, cs_A, grid.dk, k_hi))
    mask = (grid.k >= k_lo) & (grid.k <= k_fit_hi)
    if mask.sum() < 200:
        raise CTFEstimateError("too few Fourier samples in the fit range; use a larger micrograph")
    resid = spec.pn[mask] - search.background(grid.k[mask], coef)
    # whiten: divide by the RMS of the residual in each 1-sample radial bin (smoothed)
    rb = spec.rbin[mask]
    var = np.bincount(rb, resid * resid, minlength=spec.nb) / np.maximum(
        np.bincount(rb, minlength=spec.nb), 1
    )
    var = np.convolve(np.pad(var, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    s_vals = resid / np.sqrt(np.maximum(var[rb], 1e-30))
    good = np.isfinite(s_vals) & (var[rb] > 0)
    if good.sum() < 200:
        raise CTFEstimateError("no Thon rings found in the power spectrum")
    s_vals = s_vals[good]
    k_masked = grid.k[mask][good]
    arrays = (s_vals, grid.k2[mask][good], grid.cos2[mask][good], grid.sin2[mask][good])

    def make_cc(select: np.ndarray):
        sv, k2m, c2m, s2m = (a[select] for a in arrays)
        s_c = sv - sv.mean()
        s_norm = math.sqrt(float(np.sum(s_c * s_c)))

        def cc_2d(x: np.ndarray) -> float:
            m, a1, a2 = x[0], x[1], x[2]
            ph = x[3] if len(x) > 3 else ph1
            dz = m + a1 * c2m + a2 * s2m
            model = _ctf2(_chi(k2m, dz, lam, cs_A, ph), o.amplitude_contrast)
            model -= model.mean()
            norm = math.sqrt(float((model * model).sum())) * s_norm + 1e-30
            return float((model * s_c).sum() / norm)  # not np.dot: threaded BLAS spins

        return cc_2d

    # coarse: astigmatism seeds and a first refinement on the low-resolution part only
    k_coarse = min(k_fit_hi, 1.0 / 7.0)
    coarse = make_cc(k_masked <= k_coarse)
    seeds = [(0.0, 0.0)]
    for h in (100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0):
        if h > max_astigmatism_A:
            break
        for ang in np.radians(np.arange(0.0, 180.0, 15.0)):
            seeds.append((h * math.cos(2 * ang), h * math.sin(2 * ang)))
    scored = sorted(((coarse(np.array([d1, a, b])), a, b) for a, b in seeds), key=lambda t: -t[0])
    candidates = [
        _nelder_mead(coarse, [d1, a, b] + ([ph1] if phase_shift else []), 200.0, phase_shift)
        for _, a, b in scored[:3]
    ]
    fine = make_cc(np.ones(len(s_vals), bool))
    start = list(max(candidates, key=lambda t: t[1])[0])
    best_x, fom = _nelder_mead(fine, start, 30.0, phase_shift)
    return _Fit2D(best_x, fom, k_fit_hi, mask, good, s_vals)


def _quality(spec: _Spectrum, fitted, k_lo: float, optics: _Optics):
    """Stage 4: Pn ~ CTF² correlation in equal-phase shells of two rings, fit resolution.

    ``fitted``: (mean defocus, a₁, a₂ in Å, phase in rad). Returns shell frequencies
    (1/Å), shell correlations (running mean over three shells) and the fit resolution (Å,
    inf when no shell reaches 0.3).
    """
    m, a1, a2, ph = fitted
    grid = spec.grid
    nyquist = 0.5 / grid.pixel_size_A
    full = (grid.k >= k_lo) & (grid.k <= 0.98 * nyquist)
    dz_all = m + a1 * grid.cos2[full] + a2 * grid.sin2[full]
    chi_all = _chi(grid.k2[full], dz_all, optics.lam, optics.cs_A, ph) + math.asin(
        optics.amplitude_contrast
    )
    model_all = np.sin(chi_all) ** 2
    shell = np.floor(chi_all / (2 * math.pi)).astype(int)
    k_full = grid.k[full]
    pn_full = spec.pn[full]
    shell_k, shell_cc = [], []
    for sh in range(max(int(shell.min()), 0), int(shell.max()) + 1):
        sel = shell == sh
        if sel.sum() < 30:
            continue
        a = pn_full[sel] - pn_full[sel].mean()
        b = model_all[sel] - model_all[sel].mean()
        denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
        shell_k.append(float(np.median(k_full[sel])))
        shell_cc.append(float((a * b).sum() / denom) if denom > 0 else 0.0)
    shell_k_arr, shell_cc_arr = np.array(shell_k), np.array(shell_cc)
    if len(shell_cc_arr) >= 3:  # running mean over three shells: less noise, same trend
        padded = np.pad(shell_cc_arr, 1, mode="edge")
        shell_cc_arr = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
    resolution = _fit_resolution(shell_k_arr, shell_cc_arr, k_full, shell, 0.3)
    return shell_k_arr, shell_cc_arr, resolution


def _fit_resolution(shell_k, shell_cc, k_full, shell, threshold) -> float:
    """Resolution (Å) at the outer edge of the last shell before two shells below threshold."""
    if len(shell_cc) == 0:
        return float("inf")
    last_good = -1
    below = 0
    for i, cc in enumerate(shell_cc):
        if cc >= threshold:
            last_good = i
            below = 0
        else:
            below += 1
            if below >= 2:
                break
    if last_good < 0:
        return float("inf")
    edge = shell_k[last_good]
    if last_good + 1 < len(shell_k):
        edge = 0.5 * (shell_k[last_good] + shell_k[last_good + 1])
    return 1.0 / edge
