"""The contrast transfer function (CTF) of a TEM, RELION/CTFFIND conventions.

CTF(k) = −[√(1−A²)·sin χ(k) + A·cos χ(k)] with amplitude contrast A and
χ(k) = π·λ·Δf(θ)·k² − (π/2)·Cs·λ³·k⁴ + φ (phase shift),
Δf(θ) = ½[Δf_U + Δf_V + (Δf_U − Δf_V)·cos 2(θ − θ_ast)].

Units: Å for defocus and wavelength, mm for Cs (converted to Å inside), kV for the
accelerating voltage, degrees for angles, 1/Å for spatial frequency. Underfocus is
positive; ``defocus_angle_deg`` is the angle of the U axis from the image X axis
(columns). Arrays are indexed [row, column] = [y, x].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline import backend

#: electron rest energy m0·c² in eV, h·c in eV·Å
_M0C2_EV = 510998.95
_HC_EV_A = 12398.419843320026


def electron_wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength in Å (0.0197 Å at 300 kV, 0.0251 Å at 200 kV)."""
    if voltage_kV <= 0:
        raise ValueError(f"voltage must be positive (got {voltage_kV} kV)")
    e = voltage_kV * 1e3
    return _HC_EV_A / math.sqrt(e * (2 * _M0C2_EV + e))


@dataclass(frozen=True)
class CTFParams:
    """Per-micrograph CTF parameters (RELION names in comments)."""

    defocus_u_A: float  # rlnDefocusU, ≥ defocus_v_A
    defocus_v_A: float  # rlnDefocusV
    defocus_angle_deg: float  # rlnDefocusAngle
    voltage_kV: float = 300.0  # rlnVoltage
    cs_mm: float = 2.7  # rlnSphericalAberration
    amplitude_contrast: float = 0.07  # rlnAmplitudeContrast
    phase_shift_deg: float = 0.0  # rlnPhaseShift
    bfactor_A2: float = 0.0  # envelope exp(−B k²/4), rlnCtfBfactor

    @property
    def wavelength_A(self) -> float:
        return electron_wavelength_A(self.voltage_kV)

    def normalised(self) -> CTFParams:
        """The same CTF with U ≥ V and the angle in (−90, 90] (RELION convention)."""
        u, v, a = self.defocus_u_A, self.defocus_v_A, self.defocus_angle_deg
        if v > u:
            u, v, a = v, u, a + 90.0
        a = (a + 90.0) % 180.0 - 90.0
        if a == -90.0:
            a = 90.0
        return CTFParams(
            u,
            v,
            a,
            self.voltage_kV,
            self.cs_mm,
            self.amplitude_contrast,
            self.phase_shift_deg,
            self.bfactor_A2,
        )


def frequency_grid(shape: tuple[int, int], pixel_size_A: float, rfft: bool = False):
    """Spatial frequencies (kx, ky) in 1/Å on the FFT grid of an image of ``shape`` (rows, cols).

    Unshifted (FFT order). With ``rfft=True`` the last axis has ``cols // 2 + 1`` entries.
    Returned on the active backend device.
    """
    xp = backend.xp()
    ny, nx = shape
    ky = xp.fft.fftfreq(ny, d=pixel_size_A)
    kx = xp.fft.rfftfreq(nx, d=pixel_size_A) if rfft else xp.fft.fftfreq(nx, d=pixel_size_A)
    return kx[None, :], ky[:, None]


def chi(kx, ky, params: CTFParams):
    """Phase aberration χ (radians) at frequencies (kx, ky) in 1/Å."""
    xp = backend.xp()
    lam = params.wavelength_A
    cs_A = params.cs_mm * 1e7
    k2 = kx * kx + ky * ky
    theta = xp.arctan2(ky, kx)
    ang = math.radians(params.defocus_angle_deg)
    dz = 0.5 * (
        params.defocus_u_A
        + params.defocus_v_A
        + (params.defocus_u_A - params.defocus_v_A) * xp.cos(2.0 * (theta - ang))
    )
    return (
        math.pi * lam * dz * k2
        - 0.5 * math.pi * cs_A * lam**3 * k2 * k2
        + math.radians(params.phase_shift_deg)
    )


def ctf_from_chi(chi_values, amplitude_contrast: float):
    """CTF value from χ: −[√(1−A²)·sin χ + A·cos χ]."""
    xp = backend.xp()
    a = amplitude_contrast
    return -(math.sqrt(1.0 - a * a) * xp.sin(chi_values) + a * xp.cos(chi_values))


def ctf_2d(shape: tuple[int, int], pixel_size_A: float, params: CTFParams, rfft: bool = True):
    """The CTF sampled on the (r)FFT grid of an image of ``shape``; float32 on the active device.

    Includes the B-factor envelope exp(−B·k²/4) when ``params.bfactor_A2`` is non-zero.
    """
    xp = backend.xp()
    kx, ky = frequency_grid(shape, pixel_size_A, rfft=rfft)
    values = ctf_from_chi(chi(kx, ky, params), params.amplitude_contrast)
    if params.bfactor_A2:
        values = values * xp.exp(-params.bfactor_A2 * (kx * kx + ky * ky) / 4.0)
    return values.astype(xp.float32)


def ctf_1d(k_per_A, defocus_A: float, params: CTFParams):
    """Rotationally symmetric CTF at radial frequencies ``k_per_A`` (1/Å) for one defocus (Å)."""
    xp = backend.xp()
    k = xp.asarray(k_per_A, dtype=xp.float64)
    lam = params.wavelength_A
    cs_A = params.cs_mm * 1e7
    chi_values = (
        math.pi * lam * defocus_A * k**2
        - 0.5 * math.pi * cs_A * lam**3 * k**4
        + math.radians(params.phase_shift_deg)
    )
    return ctf_from_chi(chi_values, params.amplitude_contrast)
