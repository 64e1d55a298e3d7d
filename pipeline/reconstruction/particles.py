"""Loading particle images for reconstruction: stacks, CTFs, normalisation.

Reads a RELION 3.1 particles STAR through :mod:`pipeline.io.particles` and checks every
referenced stack's header (mrcfile) and size; images are read in chunks on demand with
plain file reads (:class:`ImageSource`, :class:`StackFile`), each normalised to zero mean and unit standard deviation of
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


@dataclass(frozen=True)
class StackFile:
    """Where an MRC stack's images are on disk: ``path``, byte ``offset`` of the first
    image, their ``dtype``, how many (``count``), the ``box`` (pixels) and the header's
    voxel size (Å)."""

    path: Path
    offset: int
    dtype: np.dtype
    count: int
    box: int
    voxel_A: float

    @classmethod
    def open(cls, path: Path) -> StackFile:
        """Validate ``path``'s header (mrcfile) and size; raise :class:`ParticleInputError`."""
        import mrcfile
        from mrcfile.utils import data_dtype_from_header

        try:
            with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
                header = mrc.header
                dtype = np.dtype(data_dtype_from_header(header))
                nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
                offset = 1024 + int(header.nsymbt)
                voxel = float(mrc.voxel_size.x)
        except (ValueError, OSError, EOFError) as exc:
            text = f"{path}: not a readable MRC file ({exc})".replace("\n", " ")
            raise ParticleInputError(text) from None
        if np.issubdtype(dtype, np.complexfloating):
            raise ParticleInputError(f"{path}: complex MRC data is not an image stack")
        if nx != ny:
            raise ParticleInputError(f"{path}: images are {nx}×{ny} px, not square")
        size = path.stat().st_size
        need = offset + nz * nx * ny * dtype.itemsize
        if size < need:
            raise ParticleInputError(
                f"{path}: truncated ({size} bytes, the header promises {nz} images of "
                f"{nx}×{ny} {dtype} = {need} bytes)"
            )
        return cls(path, offset, dtype, nz, nx, voxel)

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Images ``rows`` (sorted, 0-based) into ``out`` (len(rows), N, N) float32, read
        run by run with plain file reads (no memory map: the page cache holds what was
        read, not this process, so its resident memory stays bounded)."""
        per = self.box * self.box
        with open(self.path, "rb") as handle:
            start = 0
            while start < len(rows):
                stop = start + 1
                while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                    stop += 1
                handle.seek(self.offset + int(rows[start]) * per * self.dtype.itemsize)
                block = np.fromfile(handle, dtype=self.dtype, count=(stop - start) * per)
                out[start:stop] = block.reshape(stop - start, self.box, self.box)
                start = stop


class ImageSource:
    """Particle images read on demand from their stacks on disk: ``source[a:b]`` (or an
    index array) gives those images (m, N, N) float32, contrast flipped (module doc) and
    normalised (:func:`normalise`); ``shape`` is (n, N, N). Only the images asked for are
    ever in memory; stacks are opened per read (a million particles in ten thousand
    stacks hold no file open)."""

    def __init__(self, stacks: dict[str, StackFile], names: list[str], indices, box: int):
        self._stacks = stacks
        order = sorted(stacks)
        code = {name: i for i, name in enumerate(order)}
        self._files = [stacks[name] for name in order]
        self._stack_of = np.fromiter((code[name] for name in names), np.int32, len(names))
        self._indices = np.asarray(indices, dtype=np.int64)
        self.shape = (len(self._indices), box, box)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[key : key + 1 if key != -1 else None][0]
        rows = np.atleast_1d(np.arange(self.shape[0])[key])
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)
        stack_of = self._stack_of[rows]
        for s in np.unique(stack_of):
            mine = np.flatnonzero(stack_of == s)
            where = self._indices[rows[mine]]
            order = np.argsort(where, kind="stable")
            block = np.empty((len(mine), *self.shape[1:]), dtype=np.float32)
            self._files[s].read(where[order], block)
            out[mine[order]] = block
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
    cache: dict[str, StackFile] = {}
    for idx, stack in zip(indices, stacks, strict=True):
        if stack not in cache:
            # relative to the STAR file's folder, a folder above it (the run folder of
            # the workflow's files, RELION's project folder) or the working folder
            path = resolve_data_path(stack, star_path)
            if not path.exists():
                raise ParticleInputError(f"{star_path}: particle stack {stack} not found")
            found = StackFile.open(path)
            if found.box != box:
                raise ParticleInputError(
                    f"{path}: images are {found.box}×{found.box} px but rlnImageSize is {box}"
                )
            voxel = found.voxel_A
            if voxel > 0 and abs(voxel - pixel) > 0.01 * pixel and voxel != 1.0:
                raise ParticleInputError(
                    f"{path}: voxel size {voxel:g} Å differs from rlnImagePixelSize {pixel:g} Å"
                )
            cache[stack] = found
        if idx >= cache[stack].count:
            raise ParticleInputError(
                f"{star_path}: image {idx + 1}@{stack} beyond the {cache[stack].count} images in the stack"
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


def half_plane_ctfs(
    params: list[CTFParams],
    plane: fourier.HalfPlane,
    pixel_size_A: float,
    count: int | None = None,
):
    """CTF values (n, K) float32 of each particle on the half-plane pixels (device); only
    the first ``count`` (radius-sorted) pixels when given."""
    xp = backend.xp()
    cols = slice(None, count)
    kx = backend.asarray(plane.kx[cols] / (plane.box * pixel_size_A), dtype=xp.float64)
    ky = backend.asarray(plane.ky[cols] / (plane.box * pixel_size_A), dtype=xp.float64)
    out = xp.empty((len(params), kx.size), dtype=xp.float32)
    k2 = kx * kx + ky * ky
    for i, p in enumerate(params):
        values = ctf_from_chi(chi(kx, ky, p), p.amplitude_contrast)
        if p.bfactor_A2:
            values = values * xp.exp(-p.bfactor_A2 * k2 / 4.0)
        out[i] = values
    return out
