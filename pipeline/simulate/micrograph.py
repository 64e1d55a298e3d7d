"""Whole-field micrographs: particles in amorphous ice, contaminants, CTF, Poisson counts.

Image formation (one wave, whole field):

1. Specimen phase φ and amplitude (absorption) on the canvas, in radians:
   φ = σ_e · [Σ_particles P_A(V − V_ice·M) + V_ice·t(x, y) + δφ_ice + contaminants + carbon],
   σ_e the relativistic interaction constant (rad per V·Å), P_A the projection of the map at
   pose A (:mod:`pipeline.simulate.projection`), M the particle's solvent-excluding envelope,
   t the ice thickness (smooth, low-frequency variation), δφ_ice the amorphous-ice phase noise
   (water molecules with the amorphous-ice structure factor: weak at low, strong at high
   spatial frequency, a peak near 1/3.7 Å⁻¹). Contaminants (ice balls / frozen ethane) are big
   dense spheres: strong phase and absorption. An optional carbon edge adds a thick film.
2. Object wave ψ = a·exp(iφ − μ) with μ = φ·A/√(1−A²) (so a weak object gives exactly the CTF
   of :mod:`pipeline.ctf_model` with amplitude contrast A) and a = exp(−t/λ_in) (inelastic
   loss removed by the energy filter; λ_in = 3500 Å).
3. Image wave ψ_img = IFFT[FFT(ψ)·exp(iχ)·E_s·E_t·E_B], χ from :func:`pipeline.ctf_model.chi`;
   envelopes of spatial coherence (illumination aperture), temporal coherence (focal spread)
   and the CTF B-factor. Intensity I = |ψ_img|²; for weak objects
   I ≈ 1 + 2/√(1−A²)·IFFT[CTF·φ̂]: protein is dark in underfocus, Thon rings from the ice sit
   exactly at the zeros of :func:`pipeline.ctf_model.ctf_2d`.
4. Counts: Poisson with mean dose·(pixel area)·I/⟨I⟩, so the mean count per pixel is the
   dose at the detector (e/Å²) × pixel area (Å²).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline import backend
from pipeline.ctf_model import CTFParams, electron_wavelength_A
from pipeline.geometry import matrix_to_euler, random_rotations
from pipeline.simulate.particles import CTFDraw, _check_volume, _rng
from pipeline.simulate.projection import FourierProjector, project_into, support_radius_px
from pipeline.simulate.volume import SimulationError, require_positive

#: mean inner potential of amorphous ice (V)
ICE_POTENTIAL_V = 3.6
#: mean inner potential of amorphous carbon (V)
CARBON_POTENTIAL_V = 9.0
#: inelastic mean free path in ice at 300 kV (Å), scaled with voltage
INELASTIC_MFP_A = 3500.0
#: number density of water molecules in amorphous ice (per Å³, 0.94 g/cm³)
WATER_PER_A3 = 0.0314


def interaction_constant(voltage_kV: float) -> float:
    """σ_e in rad/(V·Å): phase shift per projected potential, relativistic."""
    lam = electron_wavelength_A(voltage_kV)
    e0 = 510998.95
    v = voltage_kV * 1e3
    return 2 * math.pi / (lam * v) * (e0 + v) / (2 * e0 + v)


@dataclass
class MicrographTruth:
    """Ground truth of one simulated micrograph (pixels of the micrograph as stored)."""

    coords_px: np.ndarray  # (n, 2) particle centres [x = column, y = row]
    eulers_deg: np.ndarray  # (n, 3) rlnAngleRot/Tilt/Psi
    ctf: CTFParams
    contaminant_coords_px: np.ndarray  # (m, 2) [x, y]
    contaminant_radii_px: np.ndarray  # (m,)
    pixel_size_A: float
    dose_e_A2: float
    particle_diameter_A: float
    ice_thickness_A: float = 0.0
    shape: tuple[int, int] = (0, 0)
    carbon_fraction: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (lists and floats)."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            out[key] = value
        out["ctf"] = asdict(self.ctf)
        out["shape"] = list(self.shape)
        return out


def _random_field(shape, rng, correlation_px: float) -> np.ndarray:
    """Smooth Gaussian random field, zero mean, unit variance, Gaussian correlation length."""
    ny, nx = shape
    from scipy import fft

    white = rng.standard_normal(shape, dtype=np.float32)
    ky = np.fft.fftfreq(ny).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(nx).astype(np.float32)[None, :]
    filt = np.exp(-2 * (math.pi * correlation_px) ** 2 * (kx * kx + ky * ky))
    out = fft.irfft2(fft.rfft2(white, workers=-1) * filt, s=shape, workers=-1)
    return out / (out.std() + 1e-30)


def _water_form_factor(k_per_A: np.ndarray) -> np.ndarray:
    """Electron scattering factor (Å) of one H₂O molecule at spatial frequency k (1/Å)."""
    import gemmi

    stol2 = (np.asarray(k_per_A) ** 2 / 4.0).ravel()
    o, h = gemmi.Element("O").c4322, gemmi.Element("H").c4322
    # the c4322 sums of Gaussians, vectorised: f(s) = Σ a_i exp(−b_i s²)
    values = sum(a * np.exp(-b * stol2) for a, b in zip(o.a, o.b, strict=True)) + 2 * sum(
        a * np.exp(-b * stol2) for a, b in zip(h.a, h.b, strict=True)
    )
    return values.reshape(np.shape(k_per_A))


def _ice_structure_factor(k_per_A: np.ndarray) -> np.ndarray:
    """Amorphous-ice structure factor: low at low k (incompressible), peak at 1/3.7 Å⁻¹."""
    k = np.asarray(k_per_A)
    s0 = 0.06
    rise = s0 + (1 - s0) * (1 - np.exp(-((k / 0.2) ** 2)))
    return rise + 1.3 * np.exp(-(((k - 0.27) / 0.04) ** 2))


def ice_phase_noise(
    shape: tuple[int, int],
    pixel_size_A: float,
    thickness_A: np.ndarray | float,
    sigma_e: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Phase fluctuations (rad) of an amorphous ice layer of ``thickness_A`` (mean removed).

    Power spectrum Φ(k) = ρ·t·(σ_e·47.878 V·Å²·f_H₂O(k))²·S(k) (rad²·Å²), ρ the number
    density of water, S the amorphous-ice structure factor; generated as filtered white noise.
    """
    from pipeline.simulate.volume import POTENTIAL_V_A2

    ny, nx = shape
    kx = np.fft.rfftfreq(nx, d=pixel_size_A).astype(np.float32)[None, :]
    ky = np.fft.fftfreq(ny, d=pixel_size_A).astype(np.float32)[:, None]
    k = np.sqrt(kx * kx + ky * ky)
    mean_t = float(np.mean(thickness_A))
    psd = (
        WATER_PER_A3
        * mean_t
        * (sigma_e * POTENTIAL_V_A2 * _water_form_factor(k)) ** 2
        * _ice_structure_factor(k)
    )
    from scipy import fft

    white = rng.standard_normal(shape, dtype=np.float32)
    amplitude = (np.sqrt(psd) / pixel_size_A).astype(np.float32)
    noise = fft.irfft2(fft.rfft2(white, workers=-1) * amplitude, s=shape, workers=-1)
    if np.ndim(thickness_A):
        noise *= np.sqrt(np.clip(np.asarray(thickness_A) / mean_t, 0, None))
    return noise - noise.mean()


def solvent_envelope(
    volume: np.ndarray, pixel_size_A: float, excluded_volume_A3: float | None = None
) -> np.ndarray:
    """Soft mask (0–1) of where the particle displaces ice: map smoothed to ~4 Å above 1 V.

    With ``excluded_volume_A3`` (Å³) the threshold on the smoothed map is chosen instead so
    that the mask holds that volume, e.g. the protein's partial specific volume
    (:func:`protein_volume_A3`). The 1 V threshold of the default gives a mask 1.4–1.5× the
    partial specific volume of the shipped assemblies (gaps between helices count as
    protein), so it removes too much ice and halves the particle's low-resolution contrast.
    """
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(volume.astype(np.float32), sigma=2.0 / pixel_size_A)
    if excluded_volume_A3 is None:
        mask = (smooth > 1.0).astype(np.float32)
    else:
        n_voxels = int(round(excluded_volume_A3 / pixel_size_A**3))
        if not 0 < n_voxels < smooth.size:
            raise SimulationError(
                f"excluded volume {excluded_volume_A3:.3g} Å³ does not fit the "
                f"{volume.shape[0]}³ box at {pixel_size_A} Å/px"
            )
        level = np.partition(smooth.ravel(), smooth.size - n_voxels)[smooth.size - n_voxels]
        mask = (smooth >= level).astype(np.float32)
    return ndimage.gaussian_filter(mask, sigma=1.0)


#: partial specific volume of proteins, Å³ per Da (0.73 cm³/g; Harpaz, Gerstein & Chothia 1994)
PROTEIN_A3_PER_DA = 1.212


def protein_volume_A3(mass_kDa: float) -> float:
    """Volume (Å³) a protein of ``mass_kDa`` (with hydrogens) displaces from the solvent."""
    return mass_kDa * 1000.0 * PROTEIN_A3_PER_DA


def particle_radius_A(volume: np.ndarray, pixel_size_A: float) -> float:
    """Radius (Å) of the ball around the centre holding 99 % of the positive potential."""
    n = volume.shape[0]
    z, y, x = np.ogrid[:n, :n, :n]
    r = np.sqrt((x - n // 2) ** 2 + (y - n // 2) ** 2 + (z - n // 2) ** 2)
    shells = np.bincount(
        np.round(r * 4).astype(np.int64).ravel(), weights=np.clip(volume, 0, None).ravel()
    )
    cumulative = np.cumsum(shells)
    idx = int(np.searchsorted(cumulative, 0.99 * cumulative[-1]))
    return (idx / 4 + 0.5) * pixel_size_A


_PREPARED: dict = {}


def prepared_particle(
    volume: np.ndarray,
    pixel_size_A: float,
    projector: str,
    excluded_volume_A3: float | None = None,
) -> dict:
    """Radius, ice-contrast map and projector of a map, cached per map (acquisitions reuse it);
    ``excluded_volume_A3`` as in :func:`solvent_envelope`."""
    import hashlib

    digest = hashlib.sha1(volume.tobytes()).hexdigest()
    key = (digest, volume.shape, pixel_size_A, projector, backend.device(), excluded_volume_A3)
    if key not in _PREPARED:
        envelope = solvent_envelope(volume, pixel_size_A, excluded_volume_A3)
        contrast = volume - ICE_POTENTIAL_V * envelope
        entry = dict(radius_A=particle_radius_A(volume, pixel_size_A), contrast=contrast)
        if projector == "fourier":
            entry["fourier"] = FourierProjector(contrast)
        else:
            entry["support_px"] = support_radius_px(contrast)
        _PREPARED.clear()  # one map at a time: projectors are large
        _PREPARED[key] = entry
    return _PREPARED[key]


def place_non_overlapping(
    n: int,
    field_shape: tuple[int, int],
    min_distance_px: float,
    border_px: float,
    rng: np.random.Generator,
    avoid: list[tuple[float, float, float]] = (),
    max_tries: int = 200,
) -> np.ndarray:
    """Up to ``n`` random centres [x, y] at least ``min_distance_px`` apart, ≥ ``border_px``
    from the edges and outside the discs ``avoid`` = [(x, y, radius)]. Fewer if crowded."""
    ny, nx = field_shape
    lo = border_px
    if n <= 0:
        return np.empty((0, 2))
    if nx - 2 * lo <= 0 or ny - 2 * lo <= 0:
        raise SimulationError(
            f"field {nx}×{ny} px is too small for particles of {2 * border_px:.0f} px"
        )
    points = np.empty((0, 2))
    avoid = np.asarray(list(avoid), dtype=float).reshape(-1, 3)
    tries = 0
    while len(points) < n and tries < max_tries:
        tries += 1
        cand = np.column_stack([rng.uniform(lo, nx - lo, 4 * n), rng.uniform(lo, ny - lo, 4 * n)])
        for c in cand:
            if len(points) >= n:
                break
            if len(avoid) and np.any(np.hypot(*(avoid[:, :2] - c).T) < avoid[:, 2] + border_px):
                continue
            if len(points) and np.min(np.hypot(*(points - c).T)) < min_distance_px:
                continue
            points = np.vstack([points, c])
    return points


def _specimen(
    volume: np.ndarray,
    canvas_shape: tuple[int, int],
    field_origin: tuple[int, int],
    field_shape: tuple[int, int],
    pixel_size_A: float,
    *,
    n_particles: int,
    voltage_kV: float,
    n_contaminants: int,
    ice_thickness_A: float,
    carbon_edge: bool,
    rng: np.random.Generator,
    projector: str,
    ice_gradient: float = 0.0,
    excluded_volume_A3: float | None = None,
):
    """Phase φ (rad), absorption exponent μ_extra and truth pieces on the canvas."""
    volume = _check_volume(volume)
    ny, nx = canvas_shape
    oy, ox = field_origin
    sigma_e = interaction_constant(voltage_kV)
    prepared = prepared_particle(volume, pixel_size_A, projector, excluded_volume_A3)
    radius_A = prepared["radius_A"]
    radius_px = radius_A / pixel_size_A

    # ice: smooth thickness (±8 %) and amorphous phase noise
    thickness = ice_thickness_A * (1 + 0.08 * _random_field(canvas_shape, rng, min(ny, nx) / 6))
    if ice_gradient:
        # a linear ramp across the field in a random direction: ±ice_gradient at the edges
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.ogrid[:ny, :nx]
        ramp = ((xx - nx / 2) * math.cos(theta) + (yy - ny / 2) * math.sin(theta)) / (
            0.5 * max(ny, nx)
        )
        thickness = np.clip(thickness * (1 + ice_gradient * ramp), 0.1 * ice_thickness_A, None)
    phase = sigma_e * ICE_POTENTIAL_V * (thickness - thickness.mean())
    phase += ice_phase_noise(canvas_shape, pixel_size_A, thickness, sigma_e, rng)
    absorb = thickness / INELASTIC_MFP_A * (voltage_kV / 300.0) ** -0.5

    # contaminants: dense spheres of ice, 100–350 Å radius, anywhere on the canvas
    c_xy = np.column_stack([rng.uniform(0, nx, n_contaminants), rng.uniform(0, ny, n_contaminants)])
    c_r = rng.uniform(100.0, 350.0, n_contaminants) / pixel_size_A
    yy, xx = np.ogrid[:ny, :nx]
    for (cx, cy), r in zip(c_xy, c_r, strict=True):
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, nx)
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        d2 = (xx[:, x0:x1] - cx) ** 2 + (yy[y0:y1, :] - cy) ** 2
        chord_A = 2 * np.sqrt(np.clip(r * r - d2, 0, None)) * pixel_size_A
        phase[y0:y1, x0:x1] += sigma_e * ICE_POTENTIAL_V * chord_A
        absorb[y0:y1, x0:x1] += chord_A / 800.0

    # carbon: the edge of a 1.2 µm hole (radius 0.6 µm), cutting into one side of the field
    carbon = np.zeros(canvas_shape, dtype=bool)
    if carbon_edge:
        hole_r = 6000.0 / pixel_size_A
        angle = rng.uniform(0, 2 * math.pi)
        depth = rng.uniform(0.1, 0.25) * min(field_shape)
        cx = ox + field_shape[1] / 2 + math.cos(angle) * (hole_r - min(field_shape) / 2 + depth)
        cy = oy + field_shape[0] / 2 + math.sin(angle) * (hole_r - min(field_shape) / 2 + depth)
        carbon = (xx - cx) ** 2 + (yy - cy) ** 2 > hole_r**2
        carbon_t = 200.0
        edge_soft = _random_field(canvas_shape, rng, 4.0)
        phase += carbon * sigma_e * CARBON_POTENTIAL_V * carbon_t * (1 + 0.05 * edge_soft)
        phase += carbon * ice_phase_noise(canvas_shape, pixel_size_A, carbon_t * 4, sigma_e, rng)
        absorb += carbon * carbon_t / 1500.0
    del xx, yy

    # particles: non-overlapping, inside the field, off contaminants and carbon
    avoid = [(x - ox, y - oy, r) for (x, y), r in zip(c_xy, c_r, strict=True)]
    centres = place_non_overlapping(
        n_particles, field_shape, 2 * radius_px, radius_px, rng, avoid=avoid
    )
    if carbon_edge and len(centres):
        ix = np.clip(np.round(centres[:, 0] + ox).astype(int), 0, nx - 1)
        iy = np.clip(np.round(centres[:, 1] + oy).astype(int), 0, ny - 1)
        centres = centres[~carbon[iy, ix]]
    rotations = random_rotations(len(centres), rng)
    contrast = prepared["contrast"]
    box = volume.shape[0]
    if len(centres):
        if projector == "fourier":
            canvas_xy = centres + np.array([ox, oy])
            ints = np.round(canvas_xy).astype(int)
            frac = canvas_xy - ints
            fp = prepared["fourier"]
            for start in range(0, len(centres), 32):
                sl = slice(start, start + 32)
                imgs = backend.to_numpy(fp.project(rotations[sl], frac[sl], pixel_size_A))
                for img, (ix, iy) in zip(imgs, ints[sl], strict=True):
                    _paste(phase, img * sigma_e, ix - box // 2, iy - box // 2)
        else:
            radius = prepared["support_px"]
            for rot, c in zip(rotations, centres, strict=True):
                project_into(
                    phase,
                    contrast,
                    rot,
                    (c[0] + ox, c[1] + oy),
                    pixel_size_A,
                    radius_px=radius,
                    scale=sigma_e,
                )
    rot, tilt, psi = matrix_to_euler(rotations)
    return dict(
        phase=phase,
        absorb=absorb,
        centres=centres,
        eulers=np.column_stack([rot, tilt, psi]).reshape(-1, 3),
        contaminant_xy=c_xy - np.array([ox, oy]),
        contaminant_r=c_r,
        particle_diameter_A=2 * radius_A,
        carbon_fraction=float(carbon[oy : oy + field_shape[0], ox : ox + field_shape[1]].mean()),
    )


def delocalisation_px(ctf: CTFParams, pixel_size_A: float, cap_px: int = 256) -> int:
    """Pixels by which the CTF spreads information at Nyquist (λ·Δf·k + Cs·λ³·k³), capped.

    The field is simulated with this margin on every side so that the periodic FFT does not
    wrap fringes of one edge onto the other."""
    k = 0.5 / pixel_size_A
    lam = ctf.wavelength_A
    spread = lam * max(ctf.defocus_u_A, ctf.defocus_v_A) * k + ctf.cs_mm * 1e7 * lam**3 * k**3
    return int(min(math.ceil(spread / pixel_size_A) + 8, cap_px))


def _fast_len(n: int) -> int:
    from scipy import fft

    return int(fft.next_fast_len(int(n)))


def _paste(canvas: np.ndarray, image: np.ndarray, x0: int, y0: int) -> None:
    ny, nx = canvas.shape
    h, w = image.shape
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, nx), min(y0 + h, ny)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    canvas[cy0:cy1, cx0:cx1] += image[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def transfer_function(
    shape: tuple[int, int],
    pixel_size_A: float,
    ctf: CTFParams,
    illumination_aperture_mrad: float = 0.01,
    focal_spread_A: float = 50.0,
):
    """exp(iχ)·E_spatial·E_temporal·E_B on the full FFT grid of ``shape`` (complex64, device).

    χ as :func:`pipeline.ctf_model.chi` (astigmatism via cos 2θ, sin 2θ from kx, ky directly);
    E_spatial = exp(−(πα/λ)²(λΔf·k − Cs·λ³·k³)²) for illumination semi-angle α,
    E_temporal = exp(−½(π·λ·Δ·k²)²) for focal spread Δ (Å), E_B = exp(−B·k²/4).
    """
    xp = backend.xp()
    ny, nx = shape
    ky = xp.fft.fftfreq(ny, d=pixel_size_A).astype(xp.float32)[:, None]
    kx = xp.fft.fftfreq(nx, d=pixel_size_A).astype(xp.float32)[None, :]
    k2 = kx * kx + ky * ky
    safe = xp.where(k2 > 0, k2, 1)
    ang = math.radians(ctf.defocus_angle_deg)
    cos2 = ((kx * kx - ky * ky) * math.cos(2 * ang) + 2 * kx * ky * math.sin(2 * ang)) / safe
    lam = ctf.wavelength_A
    cs_A = ctf.cs_mm * 1e7
    u, v = ctf.defocus_u_A, ctf.defocus_v_A
    dz = 0.5 * (u + v) + 0.5 * (u - v) * cos2
    chi_values = (
        math.pi * lam * dz * k2
        - 0.5 * math.pi * cs_A * lam**3 * k2 * k2
        + math.radians(ctf.phase_shift_deg)
    )
    del cos2, dz
    k = xp.sqrt(k2)
    alpha = illumination_aperture_mrad * 1e-3
    mean_df = 0.5 * (u + v)
    log_env = -((math.pi * alpha / lam) ** 2) * (mean_df * lam * k - cs_A * lam**3 * k * k2) ** 2
    log_env -= 0.5 * (math.pi * lam * focal_spread_A * k2) ** 2
    if ctf.bfactor_A2:
        log_env -= ctf.bfactor_A2 * k2 / 4.0
    envelope = xp.exp(log_env)
    return (envelope * xp.cos(chi_values) + 1j * (envelope * xp.sin(chi_values))).astype(
        xp.complex64
    )


def image_intensity(
    phase: np.ndarray,
    absorb: np.ndarray,
    pixel_size_A: float,
    ctf: CTFParams,
    *,
    illumination_aperture_mrad: float = 0.01,
    focal_spread_A: float = 50.0,
) -> np.ndarray:
    """|ψ_img|² of the object wave exp(iφ − μ − absorb) through the microscope (float64, numpy).

    μ = φ·A/√(1−A²) gives the amplitude contrast of ``ctf``; envelopes as in the module doc.
    """
    xp, fft = backend.xp(), backend.fft()
    a = ctf.amplitude_contrast
    phi = xp.asarray(phase, dtype=xp.float32)
    phi = phi - phi.mean()
    mu = phi * np.float32(a / math.sqrt(1 - a * a)) + xp.asarray(absorb, dtype=xp.float32)
    wave = xp.exp(-mu) * (xp.cos(phi) + 1j * xp.sin(phi)).astype(xp.complex64)
    del mu
    transfer = transfer_function(
        phase.shape, pixel_size_A, ctf, illumination_aperture_mrad, focal_spread_A
    )
    image = fft.ifft2(fft.fft2(wave) * transfer)
    return backend.to_numpy((image.real**2 + image.imag**2).astype(xp.float64))


def imaged_specimen(
    volume: np.ndarray,
    field_shape: tuple[int, int],
    margin_px: int,
    pixel_size_A: float,
    ctf: CTFParams,
    *,
    dose_e_A2: float,
    rng: np.random.Generator,
    projector: str,
    n_particles: int,
    n_contaminants: int,
    ice_thickness_A: float,
    carbon_edge: bool = False,
    ice_gradient: float = 0.0,
    excluded_volume_A3: float | None = None,
) -> tuple[np.ndarray, MicrographTruth]:
    """A specimen on a canvas ``margin_px`` larger than the field on every side, imaged
    through ``ctf``: the relative intensity on the whole canvas (mean ≈ 1; the field is
    ``[margin:margin+ny, margin:margin+nx]``) and the truth of the field (particle centres
    in field pixels, total dose ``dose_e_A2`` in e/Å²)."""
    ny, nx = field_shape
    canvas = (_fast_len(ny + 2 * margin_px), _fast_len(nx + 2 * margin_px))
    spec = _specimen(
        volume,
        canvas,
        (margin_px, margin_px),
        field_shape,
        pixel_size_A,
        n_particles=n_particles,
        voltage_kV=ctf.voltage_kV,
        n_contaminants=n_contaminants,
        ice_thickness_A=ice_thickness_A,
        carbon_edge=carbon_edge,
        rng=rng,
        projector=projector,
        ice_gradient=ice_gradient,
        excluded_volume_A3=excluded_volume_A3,
    )
    intensity = image_intensity(spec.pop("phase"), spec.pop("absorb"), pixel_size_A, ctf)
    truth = MicrographTruth(
        coords_px=spec["centres"],
        eulers_deg=spec["eulers"],
        ctf=ctf,
        contaminant_coords_px=spec["contaminant_xy"],
        contaminant_radii_px=spec["contaminant_r"],
        pixel_size_A=float(pixel_size_A),
        dose_e_A2=float(dose_e_A2),
        particle_diameter_A=spec["particle_diameter_A"],
        ice_thickness_A=float(ice_thickness_A),
        shape=(ny, nx),
        carbon_fraction=spec["carbon_fraction"],
    )
    return intensity, truth


def simulate_micrograph(
    volume: np.ndarray,
    shape: tuple[int, int] = (2048, 2048),
    pixel_size_A: float = 1.0,
    *,
    n_particles: int = 100,
    ctf: CTFParams | None = None,
    dose_e_A2: float = 40.0,
    n_contaminants: int = 3,
    ice_thickness_A: float = 500.0,
    carbon_edge: bool = False,
    ice_gradient: float = 0.0,
    voltage_kV: float = 300.0,
    rng: np.random.Generator | int | None = None,
    projector: str = "fourier",
    noise: bool = True,
    excluded_volume_A3: float | None = None,
) -> tuple[np.ndarray, MicrographTruth]:
    """A micrograph of ``shape`` (rows, cols) in electron counts per pixel (Poisson).

    ``volume`` is the map at ``pixel_size_A`` (e.g. :func:`reference_volume`). Mean count per
    pixel = ``dose_e_A2`` × pixel area. ``ctf=None`` draws a random one (10 000–25 000 Å
    underfocus). ``noise=False`` returns the expected counts (no shot noise). See the module
    docstring for the physics. ``ice_gradient`` adds a linear thickness ramp across the field
    (thickness × (1 ± ice_gradient) at the edges, random direction), ``carbon_edge`` the edge
    of the hole's carbon film. Any cubic map works as ``volume`` (e.g.
    :func:`pipeline.simulate.assemblies.assembly_volume`). ``excluded_volume_A3`` sets the
    volume of ice each particle displaces (:func:`solvent_envelope`; default: the 1 V
    envelope). Returns (float32 image, truth).
    """
    ny, nx = (int(s) for s in shape)
    if ny < 16 or nx < 16:
        raise SimulationError(f"micrograph shape must be at least 16×16 pixels (got {shape})")
    require_positive("pixel size", pixel_size_A, "Å")
    require_positive("dose", dose_e_A2, "e/Å²")
    if n_particles < 0 or n_contaminants < 0:
        raise SimulationError("numbers of particles and contaminants must be ≥ 0")
    if not 0.0 <= ice_gradient < 1.0:
        raise SimulationError(f"ice gradient must be in [0, 1) (got {ice_gradient})")
    require_positive("ice thickness", ice_thickness_A, "Å")
    rng = _rng(rng)
    ctf = ctf if ctf is not None else CTFDraw(voltage_kV=voltage_kV).draw(rng)
    margin = delocalisation_px(ctf, pixel_size_A)
    intensity, truth = imaged_specimen(
        volume,
        (ny, nx),
        margin,
        pixel_size_A,
        ctf,
        dose_e_A2=dose_e_A2,
        rng=rng,
        projector=projector,
        n_particles=n_particles,
        n_contaminants=n_contaminants,
        ice_thickness_A=ice_thickness_A,
        carbon_edge=carbon_edge,
        ice_gradient=ice_gradient,
        excluded_volume_A3=excluded_volume_A3,
    )
    intensity = intensity[margin : margin + ny, margin : margin + nx]
    expected = intensity * (dose_e_A2 * pixel_size_A**2 / intensity.mean())
    image = rng.poisson(expected).astype(np.float32) if noise else expected.astype(np.float32)
    if ice_gradient:
        truth.extra["ice_gradient"] = float(ice_gradient)
    return image, truth
