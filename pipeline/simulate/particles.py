"""Simulated particle stacks: projections at random poses, per-particle CTF, Gaussian noise.

Image model (RELION/CTFFIND conventions of :mod:`pipeline.ctf_model`):
``image_i = IFFT[CTF_i · FFT(shift(P_{A_i} V, −origin_i))] + noise``, where P_A V is the
projection of the map at pose A (:func:`pipeline.simulate.project`), CTF_i is
:func:`pipeline.ctf_model.ctf_2d` (negative at low frequency for underfocus: protein is
*dark*, as in a raw micrograph; RELION's "invert contrast" would make it white) including the
B-factor envelope, and ``origin_i`` is (rlnOriginXAngst, rlnOriginYAngst).

SNR is defined inside the box: SNR = mean_i var(signal_i) / σ², with signal_i the noiseless
CTF-modulated image of particle i and σ² the variance of the white Gaussian noise, which is
the same for every particle (one dose for the whole stack).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import backend
from pipeline.ctf_model import CTFParams, ctf_2d
from pipeline.geometry import euler_to_matrix, matrix_to_euler, random_rotations
from pipeline.simulate.projection import FourierProjector, project
from pipeline.simulate.volume import SimulationError, require_count, require_positive


@dataclass
class ParticleStackTruth:
    """Ground truth of a simulated particle stack (RELION conventions and units)."""

    eulers_deg: np.ndarray  # (n, 3) rlnAngleRot, rlnAngleTilt, rlnAnglePsi
    shifts_A: np.ndarray  # (n, 2) rlnOriginXAngst, rlnOriginYAngst
    defocus_u_A: np.ndarray  # (n,) ≥ defocus_v_A
    defocus_v_A: np.ndarray  # (n,)
    defocus_angle_deg: np.ndarray  # (n,)
    pixel_size_A: float
    snr: float
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_A2: float = 0.0
    noise_sigma: float = 0.0  # σ of the added noise (image units: V·Å)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.eulers_deg.shape[0])

    @property
    def rotations(self) -> np.ndarray:
        """(n, 3, 3) RELION rotation matrices of the poses."""
        e = self.eulers_deg
        return euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])

    @property
    def ctf(self) -> list[CTFParams]:
        """Per-particle CTF parameters."""
        return [self.ctf_params(i) for i in range(len(self))]

    def ctf_params(self, i: int) -> CTFParams:
        return CTFParams(
            float(self.defocus_u_A[i]),
            float(self.defocus_v_A[i]),
            float(self.defocus_angle_deg[i]),
            self.voltage_kV,
            self.cs_mm,
            self.amplitude_contrast,
            0.0,
            self.b_factor_A2,
        )


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(backend.to_numpy(volume), dtype=np.float32)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise SimulationError(f"volume must be a cubic 3D array (got shape {volume.shape})")
    return volume


@dataclass(frozen=True)
class CTFDraw:
    """How a simulation draws each CTF (per particle, micrograph or movie).

    Mean defocus uniform in ``defocus_range_A`` (Å, underfocus positive), astigmatism U − V
    uniform in [0, ``max_astigmatism_A``] Å, angle uniform in (−90, 90] degrees; the optics
    are fixed: ``voltage_kV`` (kV), ``cs_mm`` (mm), ``amplitude_contrast`` (fraction).
    """

    defocus_range_A: tuple[float, float] = (10000.0, 25000.0)
    max_astigmatism_A: float = 600.0
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07

    def values(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``n`` random defocus U ≥ V (Å) and angles (degrees)."""
        lo, hi = self.defocus_range_A
        if not 0 < lo <= hi:
            raise SimulationError(f"defocus range must satisfy 0 < min ≤ max (got {lo}, {hi} Å)")
        mean = rng.uniform(lo, hi, n)
        astig = rng.uniform(0.0, self.max_astigmatism_A, n)
        angle = rng.uniform(-90.0, 90.0, n)
        return mean + astig / 2, mean - astig / 2, angle

    def draw(self, rng: np.random.Generator) -> CTFParams:
        """One random CTF."""
        du, dv, angle = self.values(1, rng)
        return CTFParams(
            float(du[0]),
            float(dv[0]),
            float(angle[0]),
            self.voltage_kV,
            self.cs_mm,
            self.amplitude_contrast,
        )


#: micrographs' and movies' draw
DEFAULT_CTFS = CTFDraw()
#: the particle stacks' draw: closer to focus than a micrograph's default
PARTICLE_CTFS = CTFDraw(defocus_range_A=(8000.0, 25000.0))


def simulate_particle_stack(
    volume: np.ndarray,
    n: int,
    pixel_size_A: float,
    *,
    snr: float = 0.05,
    ctfs: CTFDraw = PARTICLE_CTFS,
    max_shift_A: float | None = None,
    b_factor_A2: float = 20.0,
    rng: np.random.Generator | int | None = None,
    projector: str = "fourier",
    batch: int = 64,
) -> tuple[np.ndarray, ParticleStackTruth]:
    """``n`` noisy CTF-modulated projections of ``volume`` (voxel = ``pixel_size_A``).

    Poses are uniform on SO(3); shifts (rlnOriginX/YAngst) uniform in a disk of radius
    ``max_shift_A`` (default 3 pixels); each particle's CTF drawn by ``ctfs``. ``snr`` is
    signal variance / noise variance inside the box (``np.inf`` gives noiseless images). ``projector`` is ``"fourier"``
    (fast central slices) or ``"real"`` (ray sums). Returns ((n, box, box) float32, truth);
    draws poses, shifts and CTFs before the noise, so the same seed with ``snr=np.inf`` gives
    the noiseless counterpart. The CTF is applied on the active backend device.
    """
    volume = _check_volume(volume)
    require_count("number of particles", n)
    require_positive("pixel size", pixel_size_A, "Å")
    require_positive("SNR", snr)
    n = int(n)
    rng = _rng(rng)
    box = volume.shape[0]
    if max_shift_A is None:
        max_shift_A = 3.0 * pixel_size_A
    rotations = random_rotations(n, rng)
    rot, tilt, psi = matrix_to_euler(rotations)
    eulers = np.stack([rot, tilt, psi], axis=1)
    rotations = euler_to_matrix(rot, tilt, psi)  # exactly the matrices the angles describe
    radius = max_shift_A * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    shifts = np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1)
    du, dv, angle = ctfs.values(n, rng)
    truth = ParticleStackTruth(
        eulers,
        shifts,
        du,
        dv,
        angle,
        float(pixel_size_A),
        float(snr),
        ctfs.voltage_kV,
        ctfs.cs_mm,
        ctfs.amplitude_contrast,
        b_factor_A2,
    )
    xp, fft = backend.xp(), backend.fft()
    images = np.empty((n, box, box), dtype=np.float32)
    fourier = FourierProjector(volume) if projector == "fourier" else None
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        if fourier is not None:
            proj = fourier.project(rotations[sl], -shifts[sl] / pixel_size_A, pixel_size_A)
        else:
            proj = xp.asarray(project(volume, rotations[sl], pixel_size_A, shifts[sl]))
        ctfs = xp.stack(
            [
                ctf_2d((box, box), pixel_size_A, truth.ctf_params(i))
                for i in range(sl.start, sl.stop)
            ]
        )
        signal = fft.irfft2(fft.rfft2(proj, axes=(-2, -1)) * ctfs, s=(box, box), axes=(-2, -1))
        images[sl] = backend.to_numpy(signal).astype(np.float32)
    if np.isfinite(snr):
        signal_var = float(images.var(axis=(1, 2)).mean())
        sigma = float(np.sqrt(signal_var / snr))
        truth.noise_sigma = sigma
        images += rng.normal(0.0, sigma, images.shape).astype(np.float32)
    return images, truth


def write_particle_stack(
    out_dir: str | os.PathLike,
    images: np.ndarray,
    truth: ParticleStackTruth,
    *,
    with_poses: bool = False,
    stack_name: str = "particles.mrcs",
    micrograph_name: str = "simulated_micrograph.mrc",
) -> Path:
    """Write the stack (MRC) and a RELION 3.1 ``particles.star`` next to it; returns its path.

    ``particles.star`` has data_optics and data_particles (rlnImageName ``N@stack``, CTF per
    particle, rlnCtfBfactor); poses (rlnAngleRot/Tilt/Psi, rlnOriginX/YAngst) only with
    ``with_poses``. ``particles_truth.star`` (always with poses) is written alongside.

    The stack is written with inverted contrast (protein white), as particle extraction
    writes it (RELION convention); ``images`` from :func:`simulate_particle_stack` follow
    :mod:`pipeline.ctf_model`'s sign, in which protein is dark.
    """
    import pandas as pd

    from pipeline.io.mrc import write_mrc
    from pipeline.io.particles import ParticleTable, make_optics, write_particles_star

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationError(f"{out_dir}: cannot create output folder ({exc.strerror})") from None
    images = np.asarray(images, dtype=np.float32)
    n, box = images.shape[0], images.shape[-1]
    if n != len(truth):
        raise SimulationError(f"{n} images but {len(truth)} truth rows")
    write_mrc(out_dir / stack_name, -images, truth.pixel_size_A, stack=True)
    optics = make_optics(
        truth.pixel_size_A, box, truth.voltage_kV, truth.cs_mm, truth.amplitude_contrast
    )
    base = pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@{stack_name}" for i in range(n)],
            "rlnMicrographName": [micrograph_name] * n,
            "rlnCoordinateX": np.full(n, float(box // 2)),
            "rlnCoordinateY": np.full(n, float(box // 2)),
            "rlnOpticsGroup": np.ones(n, dtype=int),
            "rlnDefocusU": truth.defocus_u_A,
            "rlnDefocusV": truth.defocus_v_A,
            "rlnDefocusAngle": truth.defocus_angle_deg,
            "rlnCtfBfactor": np.full(n, truth.b_factor_A2),
            "rlnPhaseShift": np.zeros(n),
        }
    )
    posed = base.assign(
        rlnAngleRot=truth.eulers_deg[:, 0],
        rlnAngleTilt=truth.eulers_deg[:, 1],
        rlnAnglePsi=truth.eulers_deg[:, 2],
        rlnOriginXAngst=truth.shifts_A[:, 0],
        rlnOriginYAngst=truth.shifts_A[:, 1],
    )
    write_particles_star(out_dir / "particles_truth.star", ParticleTable(optics, posed))
    return write_particles_star(
        out_dir / "particles.star", ParticleTable(optics, posed if with_poses else base)
    )
