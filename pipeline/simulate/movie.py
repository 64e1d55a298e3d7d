"""Dose-fractionated movies: one exposure split into frames with beam-induced motion.

The clean, expected exposure (intensity of :mod:`pipeline.simulate.micrograph`, frame-1
coordinates, simulated with a margin around the field) is resampled for every frame at the
positions the specimen has moved to: content at (x, y) in frame 1 appears at
(x, y) + drift[f] + local(f, x, y) in frame f. The global drift is fast in the first frames
and slows down (1 − exp(−t/τ) along a gently curved path); the local deformation is a smooth
vector field (a few long-wavelength modes) with the same time course, zero in frame 1.
Resampling uses cubic B-splines of the finely sampled clean image (the local displacement
is evaluated at the output pixel, an excellent approximation for smooth fields of a few Å).

Each frame then gets its own Poisson shot noise at ``dose_per_frame_e_A2``; the detector's
pixel sensitivity is the gain reference g: raw frames = counts / g (float32), so
raw × g recovers the true counts exactly (``gain=False``: g = 1, integer counts).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryofac.fileio import atomic_path
from pipeline.ctf_model import CTFParams
from pipeline.simulate.micrograph import (
    MicrographTruth,
    _random_field,
    delocalisation_px,
    imaged_specimen,
    prepared_particle,
)
from pipeline.simulate.particles import DEFAULT_CTFS, _check_volume, _rng
from pipeline.simulate.volume import SimulationError, require_count, require_positive


@dataclass
class LocalDeformation:
    """Smooth local displacement (pixels) u(f, x, y) = amplitude·h(f)·Σ_modes c·cos(k·r + φ).

    ``time_course`` (n_frames,) is h(f) (0 in frame 1, 1 in the last frame); the modes have
    wavelengths of the order of the field. Call it as ``local(frame_index, x, y)`` (frame 0-based,
    x = column, y = row, any broadcastable arrays) to get an array (..., 2) of [dx, dy].
    """

    amplitude_px: float
    time_course: np.ndarray  # (n_frames,)
    wavevectors: np.ndarray  # (m, 2) cycles per pixel [kx, ky]
    coefficients: np.ndarray  # (m, 2) [cx, cy] per mode
    phases: np.ndarray  # (m,) radians
    norm: float = 1.0

    def field(self, x, y) -> np.ndarray:
        """Spatial pattern (..., 2), peak magnitude ≈ 1 over the field."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        out = np.zeros(np.broadcast(x, y).shape + (2,))
        for k, c, p in zip(self.wavevectors, self.coefficients, self.phases, strict=True):
            wave = np.cos(2 * math.pi * (k[0] * x + k[1] * y) + p)
            out[..., 0] += c[0] * wave
            out[..., 1] += c[1] * wave
        return out / self.norm

    def __call__(self, frame: int, x, y) -> np.ndarray:
        return self.amplitude_px * self.time_course[frame] * self.field(x, y)

    def to_dict(self) -> dict:
        return {
            "amplitude_px": self.amplitude_px,
            "time_course": self.time_course.tolist(),
            "wavevectors_per_px": self.wavevectors.tolist(),
            "coefficients": self.coefficients.tolist(),
            "phases_rad": self.phases.tolist(),
            "norm": self.norm,
            "model": "u(f,x,y) = amplitude_px * time_course[f] * sum_m coefficients[m] * "
            "cos(2*pi*(kx*x + ky*y) + phase[m]) / norm",
        }


@dataclass
class MovieTruth:
    """Ground truth of one simulated movie."""

    drift_px: np.ndarray  # (n_frames, 2) [dx, dy] of frame f relative to frame 1
    local_px: LocalDeformation  # callable (frame, x, y) → (..., 2)
    dose_per_frame_e_A2: float
    pixel_size_A: float
    gain: np.ndarray  # (ny, nx): raw × gain = true counts
    micrograph_truth: MicrographTruth  # particles etc. in frame-1 coordinates
    extra: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.drift_px.shape[0])

    def shift_px(self, frame: int, x, y) -> np.ndarray:
        """Total displacement (..., 2) of the content at (x, y) of frame 1 in ``frame`` (0-based)."""
        return self.drift_px[frame] + self.local_px(frame, x, y)

    @property
    def accumulated_motion_A(self) -> float:
        """Path length of the global drift over the movie (Å)."""
        steps = np.diff(self.drift_px, axis=0)
        return float(np.hypot(steps[:, 0], steps[:, 1]).sum() * self.pixel_size_A)

    def to_dict(self) -> dict:
        return {
            "drift_px": self.drift_px.tolist(),
            "local_px": self.local_px.to_dict(),
            "dose_per_frame_e_A2": self.dose_per_frame_e_A2,
            "pixel_size_A": self.pixel_size_A,
            "n_frames": self.n_frames,
            "accumulated_motion_A": self.accumulated_motion_A,
            "micrograph": self.micrograph_truth.to_dict(),
        }


def drift_trajectory(
    n_frames: int, drift_total_A: float, pixel_size_A: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Global drift (n_frames, 2) px relative to frame 1 and the time course h(f) ∈ [0, 1].

    Path length ``drift_total_A``: fast early, slowing (1 − exp(−t/τ), τ = n_frames/4 frames),
    along a direction with a random gentle curvature."""
    t = np.arange(n_frames) + 0.5
    tau = max(n_frames / 4.0, 0.5)
    g = 1 - np.exp(-t / tau)
    h = (g - g[0]) / (g[-1] - g[0]) if n_frames > 1 else np.zeros(1)
    theta = rng.uniform(0, 2 * math.pi)
    bend = rng.uniform(-0.4, 0.4)
    u = np.array([math.cos(theta), math.sin(theta)])
    v = np.array([-u[1], u[0]])
    path = h[:, None] * u + bend * (h**2)[:, None] * v
    steps = np.diff(path, axis=0)
    length = np.hypot(steps[:, 0], steps[:, 1]).sum() if n_frames > 1 else 0.0
    scale = drift_total_A / pixel_size_A / length if length > 0 else 0.0
    return path * scale, h


def local_deformation(
    amplitude_A: float,
    pixel_size_A: float,
    field_shape: tuple[int, int],
    time_course: np.ndarray,
    rng: np.random.Generator,
    n_modes: int = 4,
) -> LocalDeformation:
    """Random smooth deformation field: ``n_modes`` plane waves of 0.5–1.5 field wavelengths."""
    ny, nx = field_shape
    size = max(nx, ny)
    wavelength = rng.uniform(0.6, 1.5, n_modes) * size
    direction = rng.uniform(0, 2 * math.pi, n_modes)
    k = np.column_stack([np.cos(direction), np.sin(direction)]) / wavelength[:, None]
    coefficients = rng.normal(size=(n_modes, 2))
    phases = rng.uniform(0, 2 * math.pi, n_modes)
    local = LocalDeformation(amplitude_A / pixel_size_A, time_course, k, coefficients, phases)
    yy, xx = np.mgrid[0 : ny : max(ny // 32, 1), 0 : nx : max(nx // 32, 1)]
    peak = np.linalg.norm(local.field(xx, yy), axis=-1).max()
    local.norm = float(peak) if peak > 0 else 1.0
    return local


@dataclass(frozen=True)
class SpecimenMotion:
    """How the specimen moves during a movie (Å): a global drift of path length
    ``drift_total_A`` (:func:`drift_trajectory`) and a smooth local deformation of peak
    amplitude ``local_amplitude_A`` that follows the drift's time course
    (:func:`local_deformation`)."""

    drift_total_A: float = 20.0
    local_amplitude_A: float = 3.0

    def __post_init__(self):
        if self.drift_total_A < 0 or self.local_amplitude_A < 0:
            raise SimulationError("drift and local deformation amplitudes must be ≥ 0 Å")

    def draw(
        self,
        n_frames: int,
        pixel_size_A: float,
        field_shape: tuple[int, int],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, LocalDeformation]:
        """The drift (n_frames, 2) px relative to frame 1 and the local deformation."""
        drift, time_course = drift_trajectory(n_frames, self.drift_total_A, pixel_size_A, rng)
        amplitude = self.local_amplitude_A
        return drift, local_deformation(amplitude, pixel_size_A, field_shape, time_course, rng)


DEFAULT_MOTION = SpecimenMotion()


def gain_reference(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Per-pixel sensitivity ~1 ± 5 % times a ±3 % smooth vignetting; float32, positive."""
    pixel = 1 + 0.05 * rng.standard_normal(shape)
    smooth = 1 + 0.03 * _random_field(shape, rng, min(shape) / 4)
    return np.clip(pixel * smooth, 0.5, 1.5).astype(np.float32)


def simulate_movie(
    volume: np.ndarray,
    shape: tuple[int, int] = (1024, 1024),
    pixel_size_A: float = 1.0,
    *,
    n_frames: int = 20,
    dose_per_frame_e_A2: float = 1.0,
    motion: SpecimenMotion = DEFAULT_MOTION,
    ctf: CTFParams | None = None,
    n_particles: int | None = None,
    n_contaminants: int = 1,
    ice_thickness_A: float = 500.0,
    gain: bool | np.ndarray = True,
    rng: np.random.Generator | int | None = None,
    projector: str = "fourier",
    noise: bool = True,
    integer_counts: bool = False,
) -> tuple[np.ndarray, MovieTruth]:
    """A movie (n_frames, ny, nx) float32 of raw detector frames and its truth.

    ``volume`` is the map at ``pixel_size_A``. ``n_particles=None`` fills about a quarter of
    the field with particles. ``noise=False`` gives the expected counts per frame (÷ gain).
    ``gain``: True draws a gain reference, False uses none (integer counts), an array is used
    as the gain reference (one per acquisition). ``integer_counts=True`` records integer raw
    counts as a detector does, raw ~ Poisson(expected / gain) (a pixel of gain g is 1/g as
    sensitive), so raw × gain has the requested mean but is no longer exactly integer.
    Mean of raw × gain per frame = ``dose_per_frame_e_A2`` × pixel area.
    """
    from scipy import ndimage

    volume = _check_volume(volume)
    ny, nx = (int(s) for s in shape)
    if ny < 16 or nx < 16:
        raise SimulationError(f"movie frames must be at least 16×16 pixels (got {shape})")
    require_count("number of frames", n_frames)
    require_positive("pixel size", pixel_size_A, "Å")
    require_positive("dose per frame", dose_per_frame_e_A2, "e/Å²")
    n_frames = int(n_frames)
    rng = _rng(rng)
    ctf = ctf if ctf is not None else DEFAULT_CTFS.draw(rng)
    drift, local = motion.draw(n_frames, pixel_size_A, (ny, nx), rng)
    if n_particles is None:
        diameter_px = 2 * prepared_particle(volume, pixel_size_A, projector)["radius_A"]
        diameter_px /= pixel_size_A
        n_particles = int(0.25 * nx * ny / diameter_px**2)
    moved_px = float(np.abs(drift).max() + local.amplitude_px) if n_frames > 1 else 0.0
    margin = int(math.ceil(moved_px)) + delocalisation_px(ctf, pixel_size_A) + 4
    intensity, micrograph_truth = imaged_specimen(
        volume,
        (ny, nx),
        margin,
        pixel_size_A,
        ctf,
        dose_e_A2=dose_per_frame_e_A2 * n_frames,
        rng=rng,
        projector=projector,
        n_particles=n_particles,
        n_contaminants=n_contaminants,
        ice_thickness_A=ice_thickness_A,
    )
    scale = (
        dose_per_frame_e_A2
        * pixel_size_A**2
        / intensity[margin : margin + ny, margin : margin + nx].mean()
    )
    coefficients = ndimage.spline_filter(
        (intensity * scale).astype(np.float32), order=3, output=np.float32
    )
    del intensity
    if isinstance(gain, np.ndarray):
        if gain.shape != (ny, nx) or not np.all(gain > 0):
            raise SimulationError(f"gain reference must be positive with shape {(ny, nx)}")
        gain_ref = gain.astype(np.float32)
    elif gain:
        gain_ref = gain_reference((ny, nx), rng)
    else:
        gain_ref = np.ones((ny, nx), np.float32)
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    pattern = (local.amplitude_px * local.field(xx, yy)).astype(np.float32)
    frames = np.empty((n_frames, ny, nx), dtype=np.float32)
    for f in range(n_frames):
        h = np.float32(local.time_course[f])
        src_x = xx + np.float32(margin - drift[f, 0]) - h * pattern[..., 0]
        src_y = yy + np.float32(margin - drift[f, 1]) - h * pattern[..., 1]
        expected = ndimage.map_coordinates(
            coefficients, [src_y, src_x], order=3, prefilter=False, output=np.float32
        )
        np.clip(expected, 0, None, out=expected)
        if integer_counts:
            expected /= gain_ref
            frames[f] = rng.poisson(expected) if noise else expected
        else:
            counts = rng.poisson(expected).astype(np.float32) if noise else expected
            frames[f] = counts / gain_ref
    truth = MovieTruth(
        drift, local, float(dose_per_frame_e_A2), float(pixel_size_A), gain_ref, micrograph_truth
    )
    return frames, truth


def write_movie(path: str | os.PathLike, frames: np.ndarray, pixel_size_A: float) -> Path:
    """Write a movie atomically: ``.mrc``/``.mrcs`` (MRC stack) or ``.tif``/``.tiff``.

    TIFF frames are uint8/uint16 (zlib-compressed, as counting cameras write them) when every
    value is an integer count in range, else float32; the pixel size goes into the TIFF
    resolution tags (pixels per cm) and the ImageDescription. Returns the path.
    """

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise SimulationError(f"{path}: a movie must be a 3D array (got {frames.ndim}D)")
    suffix = path.suffix.lower()
    if suffix in (".mrc", ".mrcs"):
        from pipeline.io.mrc import write_mrc

        return readable(write_mrc(path, frames.astype(np.float32), pixel_size_A, stack=True))
    if suffix not in (".tif", ".tiff"):
        raise SimulationError(f"{path}: movie format must be .mrc, .mrcs, .tif or .tiff")
    import tifffile

    integer = np.all(frames == np.round(frames)) and frames.min() >= 0 and frames.max() < 65536
    if integer:
        data = frames.astype(np.uint8 if frames.max() < 256 else np.uint16)
    else:
        data = frames.astype(np.float32)
    per_cm = 1e8 / pixel_size_A
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            photometric="minisblack",
            compression="zlib" if integer else None,
            compressionargs={"level": 1} if integer else None,
            resolution=(per_cm, per_cm),
            resolutionunit="CENTIMETER",
            description=f"cryofac simulated movie; pixel_size_A={pixel_size_A}",
            metadata=None,
        )
    return readable(path)


def readable(path: Path) -> Path:
    """Give a file written through a temporary name the usual permissions (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def write_gain(path: str | os.PathLike, gain: np.ndarray, pixel_size_A: float) -> Path:
    """Write the gain reference (multiply raw frames by it) as a float32 MRC image."""
    from pipeline.io.mrc import write_mrc

    return readable(write_mrc(path, np.asarray(gain, dtype=np.float32), pixel_size_A))
