"""Loading particle images for reconstruction: stacks, CTFs, normalisation.

Reads a RELION 3.1 particles STAR through :mod:`pipeline.io.particles` and opens every
referenced stack memory-mapped (mrcfile); images are read in chunks on demand
(:class:`ImageSource`), each normalised to zero mean and unit standard deviation of
its background (outside a circle of radius 0.4·box), so the whole stack is never in
memory at once. Half-plane Fourier values and per-particle CTFs
(:mod:`pipeline.ctf_model`) are computed from those chunks.

Contrast: particle stacks follow RELION (extraction inverts contrast, so protein is
white). The image model used here is ``image = CTF ⊗ projection`` with the sign of
:mod:`pipeline.ctf_model`, in which protein is dark; images are therefore negated on
load, and the reconstructed map has protein positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryofac.errors import CryofacError
from pipeline import backend
from pipeline.ctf_model import CTFParams, chi, ctf_from_chi
from pipeline.reconstruction import fourier


class ParticleInputError(CryofacError):
    """The particles cannot be used for reconstruction (missing stacks, mixed pixel sizes...)."""


class ImageSource:
    """Particle images read on demand from memory-mapped stacks: ``source[a:b]`` (or an
    index array) gives those images (m, N, N) float32, contrast flipped (module doc) and
    normalised (:func:`normalise`); ``shape`` is (n, N, N)."""

    def __init__(self, stacks: dict[str, np.ndarray], names: list[str], indices, box: int):
        self._stacks = stacks
        self._names = np.asarray(names, dtype=object)
        self._indices = np.asarray(indices, dtype=np.int64)
        self.shape = (len(self._indices), box, box)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[key : key + 1 if key != -1 else None][0]
        rows = np.atleast_1d(np.arange(self.shape[0])[key])
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)
        for j, row in enumerate(rows):
            out[j] = self._stacks[self._names[row]][self._indices[row]]
        # RELION stacks have protein white; the CTF model here has protein dark (module doc)
        np.negative(out, out=out)
        return normalise(out)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


@dataclass
class ParticleImages:
    """Particle images (a lazy :class:`ImageSource`, (n, N, N) float32 when read) with
    their CTF parameters and pixel size (Å)."""

    images: ImageSource
    ctf_params: list[CTFParams]
    pixel_size_A: float
    table: object  # pipeline.io.particles.ParticleTable
    star_path: Path

    @property
    def box(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def normalise(images: np.ndarray, background_radius_frac: float = 0.4) -> np.ndarray:
    """Zero mean and unit standard deviation of the background ring, per image (float32)."""
    box = images.shape[-1]
    g = np.arange(box) - box // 2
    outside = np.hypot(g[:, None], g[None, :]) > background_radius_frac * box
    bg = images[:, outside]
    mean = bg.mean(axis=1)
    std = bg.std(axis=1)
    std = np.where(std > 0, std, 1.0)
    return ((images - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def load_particles(star_path: str | Path) -> ParticleImages:
    """Read the STAR file and its stacks; raise :class:`ParticleInputError` with a one-line reason."""
    from pipeline.io.mrc import MRCError, read_mrc
    from pipeline.io.particles import ParticleStarError, read_particles_star
    from pipeline.io.paths import resolve_data_path

    star_path = Path(star_path)
    try:
        table = read_particles_star(star_path)
        optics = table.optics_for_particles()
        indices, stacks = table.image_locations()
    except ParticleStarError as exc:
        raise ParticleInputError(str(exc)) from None
    if len(table) == 0:
        raise ParticleInputError(f"{star_path}: no particles")
    pixel_sizes = np.unique(np.round(optics["rlnImagePixelSize"].to_numpy(float), 4))
    if len(pixel_sizes) != 1:
        raise ParticleInputError(
            f"{star_path}: inconsistent pixel sizes {', '.join(f'{p:g}' for p in pixel_sizes)} Å "
            "across optics groups (re-extract at one pixel size)"
        )
    boxes = np.unique(optics["rlnImageSize"].to_numpy(int))
    if len(boxes) != 1:
        raise ParticleInputError(f"{star_path}: particles have different box sizes {list(boxes)}")
    pixel = float(pixel_sizes[0])
    box = int(boxes[0])
    cache: dict[str, np.ndarray] = {}
    for idx, stack in zip(indices, stacks, strict=True):
        if stack not in cache:
            # relative to the STAR file's folder, a folder above it (the run folder of
            # the workflow's files, RELION's project folder) or the working folder
            path = resolve_data_path(stack, star_path)
            if not path.exists():
                raise ParticleInputError(f"{star_path}: particle stack {stack} not found")
            try:
                data, voxel = read_mrc(path, mmap=True)
            except MRCError as exc:
                raise ParticleInputError(str(exc)) from None
            if data.ndim == 2:
                data = data[None]
            if data.shape[-2:] != (box, box):
                raise ParticleInputError(
                    f"{path}: images are {data.shape[-1]}×{data.shape[-2]} px but rlnImageSize is {box}"
                )
            if voxel > 0 and abs(voxel - pixel) > 0.01 * pixel and voxel != 1.0:
                raise ParticleInputError(
                    f"{path}: voxel size {voxel:g} Å differs from rlnImagePixelSize {pixel:g} Å"
                )
            cache[stack] = data
        data = cache[stack]
        if idx >= data.shape[0]:
            raise ParticleInputError(
                f"{star_path}: image {idx + 1}@{stack} beyond the {data.shape[0]} images in the stack"
            )
    p = table.particles
    params = [
        CTFParams(
            float(u),
            float(v),
            float(a),
            float(kv),
            float(cs),
            float(ac),
            float(ps),
            float(b),
        )
        for u, v, a, kv, cs, ac, ps, b in zip(
            p["rlnDefocusU"],
            p["rlnDefocusV"],
            p["rlnDefocusAngle"],
            optics["rlnVoltage"],
            optics["rlnSphericalAberration"],
            optics["rlnAmplitudeContrast"],
            p["rlnPhaseShift"] if "rlnPhaseShift" in p.columns else np.zeros(len(p)),
            p["rlnCtfBfactor"] if "rlnCtfBfactor" in p.columns else np.zeros(len(p)),
            strict=True,
        )
    ]
    images = ImageSource(cache, stacks, indices, box)
    return ParticleImages(images, params, pixel, table, star_path)


def half_plane_ctfs(params: list[CTFParams], plane: fourier.HalfPlane, pixel_size_A: float):
    """CTF values (n, K) float32 of each particle on the half-plane pixels (device)."""
    xp = backend.xp()
    kx = backend.asarray(plane.kx / (plane.box * pixel_size_A), dtype=xp.float64)
    ky = backend.asarray(plane.ky / (plane.box * pixel_size_A), dtype=xp.float64)
    out = xp.empty((len(params), kx.size), dtype=xp.float32)
    k2 = kx * kx + ky * ky
    for i, p in enumerate(params):
        values = ctf_from_chi(chi(kx, ky, p), p.amplitude_contrast)
        if p.bfactor_A2:
            values = values * xp.exp(-p.bfactor_A2 * k2 / 4.0)
        out[i] = values
    return out


def noise_power(values, plane: fourier.HalfPlane, residual=None):
    """σ²(k) per half-plane pixel (K,): mean power per integer shell of ``residual`` (or ``values``)."""
    xp = backend.xp()
    v = values if residual is None else residual
    count = v.shape[1]
    shells = backend.asarray(plane.shells(count))
    power = xp.mean(xp.abs(v) ** 2, axis=0).astype(xp.float64)
    n = int(shells.max()) + 1
    sums = xp.bincount(shells, weights=power, minlength=n)
    counts = xp.bincount(shells, minlength=n)
    per_shell = sums / xp.maximum(counts, 1)
    return per_shell[shells].astype(xp.float32)
