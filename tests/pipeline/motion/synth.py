"""Small synthetic movies with known drift for motion-correction tests.

The specimen is a weak-phase image with a CTF (so sums show Thon rings): random blobs plus
white "ice" noise, filtered by the CTF of :mod:`pipeline.ctf_model`. Frame f shows the
specimen displaced by drift_px[f] (+ a smooth local deformation) and is Poisson sampled at
``dose_per_frame_e_A2 · pixel²`` electrons per pixel.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from pipeline.ctf_model import CTFParams, ctf_2d
from pipeline.io.star import read_table
from pipeline.simulate.movie import DEFAULT_MOTION, SpecimenMotion


def specimen_image(shape, pixel_size_A, ctf: CTFParams, rng, contrast=0.25):
    ny, nx = shape
    phase = rng.normal(size=shape)
    blobs = np.zeros(shape)
    ys = rng.integers(0, ny, 200)
    xs = rng.integers(0, nx, 200)
    blobs[ys, xs] = 1.0
    blobs = ndimage.gaussian_filter(blobs, 30.0 / pixel_size_A) * 60
    phase = phase + blobs
    spec = sfft.rfft2(phase) * ctf_2d(shape, pixel_size_A, ctf, rfft=True)
    image = sfft.irfft2(spec, s=shape)
    return 1.0 + contrast * image / image.std()


def trajectory(n_frames, total_A, pixel_size_A, rng):
    """Smooth drift (n, 2) px: decaying speed, random direction, path length ≈ total_A."""
    t = np.arange(n_frames)
    speed = np.exp(-t / (n_frames / 3.0))
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, n_frames))
    steps = np.stack([speed * np.cos(angle), speed * np.sin(angle)], 1)
    steps[0] = 0
    path = np.cumsum(steps, axis=0)
    length = np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1))
    return path * (total_A / pixel_size_A / length)


def local_field(shape, n_frames, amplitude_A, pixel_size_A):
    """Smooth local deformation (n, 2, ny, nx) px: grows linearly in time."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    xn, yn = x / nx - 0.5, y / ny - 0.5
    fx = np.sin(np.pi * xn) * np.cos(np.pi * yn)
    fy = (xn * xn - yn * yn) * 2
    amp = amplitude_A / pixel_size_A
    t = np.arange(n_frames) / max(n_frames - 1, 1)
    return amp * t[:, None, None, None] * np.stack([fx, fy])[None]


def synthetic_movie(
    shape=(1024, 1024),
    pixel_size_A=1.0,
    n_frames=20,
    dose_per_frame_e_A2=1.0,
    motion: SpecimenMotion = DEFAULT_MOTION,
    ctf: CTFParams | None = None,
    seed=0,
):
    """(frames float32 (n, ny, nx) counts, drift_px (n, 2), clean image).

    ``motion`` gives the amplitudes (the simulator's parameters); the trajectory and the
    local field are this module's own, simpler models."""
    rng = np.random.default_rng(seed)
    ctf = ctf or CTFParams(15000.0, 14000.0, 30.0)
    clean = specimen_image(shape, pixel_size_A, ctf, rng)
    drift = trajectory(n_frames, motion.drift_total_A, pixel_size_A, rng)
    electrons = dose_per_frame_e_A2 * pixel_size_A**2
    coeffs = ndimage.spline_filter(clean, order=3, mode="grid-wrap")
    amplitude_A = motion.local_amplitude_A
    local = local_field(shape, n_frames, amplitude_A, pixel_size_A) if amplitude_A else None
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    frames = np.empty((n_frames,) + tuple(shape), np.float32)
    for f in range(n_frames):
        # content at x in frame 1 appears at x + d: frame(x) = clean(x − d)
        dx, dy = drift[f]
        if local is not None:
            dx, dy = dx + local[f, 0], dy + local[f, 1]
        coords = np.stack([y - dy, x - dx]) if local is not None else None
        if coords is None:
            coords = np.stack([y - dy, x - dx])
        shifted = ndimage.map_coordinates(
            coeffs, coords, order=3, mode="grid-wrap", prefilter=False
        )
        frames[f] = rng.poisson(np.clip(shifted, 0, None) * electrons)
    return frames, drift, clean


def rigid_movie(n_frames: int, drift_total_A: float, seed: int):
    """A small movie with global drift only: 256², 1 Å/pixel, 5 e/Å² per frame, no local
    motion; returns what :func:`synthetic_movie` returns."""
    return synthetic_movie(
        (256, 256), 1.0, n_frames, 5.0, SpecimenMotion(drift_total_A, 0.0), seed=seed
    )


def read_drift(path) -> np.ndarray:
    """Specimen drift (n_frames, 2) [x, y] in pixels from a RELION ``_shifts.star``."""
    columns = ("rlnMicrographFrameNumber", "rlnMicrographShiftX", "rlnMicrographShiftY")
    table = read_table(path, "global_shift", columns).sort_values(columns[0])
    return -table[list(columns[1:])].to_numpy(dtype=np.float64)
