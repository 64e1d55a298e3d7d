"""Ground-truth volume: the Coulomb potential of a real protein (human apoferritin, PDB 6Z6U).

The shipped entry (``pipeline/data/6z6u.pdb.gz``, wwPDB, CC0) holds all 24 chains of the
~500 kDa octahedral (O) shell. Atoms are turned into an electron-scattering potential with
gemmi's :class:`gemmi.DensityCalculatorE` (Peng's electron form factors): the density is put
on a grid twice as fine as asked (with gemmi's anti-aliasing blur), Fourier-cropped to the
requested pixel size (an ideal low-pass to Nyquist) and the blur is divided back out; a raised-cosine roll-off between 0.8 and 1.0 × Nyquist
avoids Gibbs ringing.

Units: the map is the Coulomb potential in volts (V), from gemmi's density ρ (Å⁻²) times
h²/(2π·m₀·e) = 47.878 V·Å². Arrays are (z, y, x) float32; the centre of mass of the
structure sits on voxel (box//2, box//2, box//2) (the RELION origin). Protein is positive.
Maps are cached on disk (``$CRYOFAC_CACHE`` or ``~/.cache/cryofac``) because every test and
simulation reuses them.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_write

#: h²/(2π m0 e): converts gemmi's electron-scattering density (Å⁻²) to potential (V)
POTENTIAL_V_A2 = 47.87801
#: shipped structure file (wwPDB entry 6Z6U, human apoferritin, 1.25 Å cryo-EM, CC0)
STRUCTURE_FILE = Path(__file__).resolve().parent.parent / "data" / "6z6u.pdb.gz"
STRUCTURE_ID = "6z6u"
_CACHE_VERSION = 2


class SimulationError(CryofacError):
    """A simulation was asked for with parameters that cannot work (named in the message)."""


def require_positive(what: str, value: float, unit: str = "") -> None:
    """Raise :class:`SimulationError` unless ``value`` > 0 (also for NaN)."""
    if not value > 0:
        raise SimulationError(f"{what} must be positive (got {value}{' ' + unit if unit else ''})")


def require_count(what: str, value: float) -> None:
    """Raise :class:`SimulationError` unless ``value`` is a whole number ≥ 1."""
    if int(value) != value or value < 1:
        raise SimulationError(f"{what} must be a positive integer (got {value})")


@dataclass(frozen=True)
class Atoms:
    """Atom coordinates of the shipped structure, centred on the centre of mass."""

    xyz_A: np.ndarray  # (n, 3) x, y, z in Å relative to the centre of mass
    element: np.ndarray  # (n,) element symbols
    mass_Da: np.ndarray  # (n,) atomic masses
    b_iso_A2: np.ndarray  # (n,) isotropic B-factors from the entry
    centre_A: np.ndarray  # (3,) centre of mass in the entry's frame

    @property
    def total_mass_kDa(self) -> float:
        return float(self.mass_Da.sum() / 1000.0)

    @property
    def max_radius_A(self) -> float:
        return float(np.linalg.norm(self.xyz_A, axis=1).max())


def cache_dir() -> Path:
    """Directory of cached maps: ``$CRYOFAC_CACHE`` or ``~/.cache/cryofac``."""
    return Path(os.environ.get("CRYOFAC_CACHE", Path.home() / ".cache" / "cryofac"))


@functools.lru_cache(maxsize=1)
def load_structure():
    """The shipped apoferritin 24-mer as a gemmi.Structure (no waters, ligands or hydrogens)."""
    import gemmi

    with gzip.open(STRUCTURE_FILE, "rt") as handle:
        text = handle.read()
    structure = gemmi.read_pdb_string(text)
    structure.setup_entities()
    structure.remove_ligands_and_waters()
    structure.remove_hydrogens()
    structure.remove_empty_chains()
    return structure


@functools.lru_cache(maxsize=1)
def structure_atoms() -> Atoms:
    """Coordinates, elements, masses and B-factors of the shipped structure, COM-centred."""
    structure = load_structure()
    xyz, element, mass, b_iso = [], [], [], []
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                xyz.append(atom.pos.tolist())
                element.append(atom.element.name)
                mass.append(atom.element.weight * atom.occ)
                b_iso.append(atom.b_iso)
    xyz_arr = np.asarray(xyz, dtype=np.float64)
    mass_arr = np.asarray(mass, dtype=np.float64)
    centre = (xyz_arr * mass_arr[:, None]).sum(0) / mass_arr.sum()
    return Atoms(
        xyz_arr - centre, np.asarray(element), mass_arr, np.asarray(b_iso, dtype=float), centre
    )


def _check(box: int, pixel_size_A: float, resolution_A: float | None) -> None:
    if int(box) != box or box < 8:
        raise SimulationError(f"box must be an integer of at least 8 pixels (got {box})")
    if not pixel_size_A > 0 or not math.isfinite(pixel_size_A):
        raise SimulationError(f"pixel size must be positive (got {pixel_size_A} Å)")
    if resolution_A is not None and not resolution_A > 0:
        raise SimulationError(f"resolution must be positive (got {resolution_A} Å)")


def _centre_of_mass(structure) -> np.ndarray:
    xyz = np.asarray([a.pos.tolist() for a in _iter_atoms(structure)], dtype=np.float64)
    mass = np.asarray([a.element.weight * a.occ for a in _iter_atoms(structure)])
    return (xyz * mass[:, None]).sum(0) / mass.sum()


def _potential_on_grid(
    n: int, pixel_size_A: float, oversample: int = 2, structure=None
) -> np.ndarray:
    """Band-limited potential (V) on an n³ grid, COM at voxel n//2; computed finer then cropped.

    ``structure`` (a gemmi.Structure) defaults to the shipped apoferritin."""
    import gemmi

    structure = (structure if structure is not None else load_structure()).clone()
    centre_A = _centre_of_mass(structure)
    n_fine = n * oversample
    spacing = pixel_size_A / oversample
    length = n * pixel_size_A
    # centre of mass → grid point n//2 (in Å from the cell origin)
    target = (n // 2) * pixel_size_A
    shift = gemmi.Position(*(target - centre_A))
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                atom.pos = atom.pos + shift
    structure.cell = gemmi.UnitCell(length, length, length, 90, 90, 90)
    structure.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 0.0
    calc.grid.set_unit_cell(structure.cell)
    calc.grid.set_size(n_fine, n_fine, n_fine)
    # anti-aliasing blur as gemmi/Refmac choose it for this grid spacing, removed again below
    b_min = float(min(a.b_iso for a in _iter_atoms(structure)))
    blur = max(8 * math.pi**2 / 1.1 * spacing**2 - b_min, 0.0)
    calc.blur = blur
    calc.put_model_density_on_grid(structure[0])
    from scipy import fft

    fine = np.array(calc.grid, copy=False)  # float32, indexed [x, y, z]
    # half spectrum along x, kept in float32/complex64: the fine grid is the big array here
    spectrum = fft.rfftn(fine, axes=(2, 1, 0), workers=-1)  # [kx ≥ 0, ky, kz]
    keep = np.r_[0 : (n + 1) // 2, n_fine - n // 2 : n_fine]  # fftfreq(n) order
    cropped = spectrum[: n // 2 + 1][:, keep][:, :, keep]
    del spectrum, fine
    kx = np.fft.rfftfreq(n, d=pixel_size_A)[:, None, None]
    ky = np.fft.fftfreq(n, d=pixel_size_A)[None, :, None]
    kz = np.fft.fftfreq(n, d=pixel_size_A)[None, None, :]
    k2 = kx**2 + ky**2 + kz**2
    factor = np.exp(blur * k2 / 4.0)
    # raised-cosine roll-off from 0.8 to 1.0 × Nyquist: no Gibbs ringing from the hard crop
    nyquist = 0.5 / pixel_size_A
    edge = np.clip((np.sqrt(k2) / nyquist - 0.8) / 0.2, 0.0, 1.0)
    factor *= 0.5 * (1.0 + np.cos(np.pi * edge))
    # the fine grid's samples of a band-limited function: Fourier-crop preserves values
    volume = fft.irfftn(cropped * factor, s=(n, n, n), axes=(2, 1, 0)) / oversample**3
    volume = np.transpose(volume, (2, 1, 0))  # [x, y, z] → (z, y, x)
    return volume * POTENTIAL_V_A2


def _iter_atoms(structure):
    for chain in structure[0]:
        for residue in chain:
            yield from residue


def lowpass(volume: np.ndarray, pixel_size_A: float, resolution_A: float) -> np.ndarray:
    """Low-pass a map to ``resolution_A`` with a raised-cosine edge of width 1/(box·pixel)·4."""
    n = volume.shape
    k = [np.fft.fftfreq(s, d=pixel_size_A) for s in n]
    kr = np.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    k_cut = 1.0 / resolution_A
    width = 4.0 / (max(n) * pixel_size_A)
    edge = np.clip((kr - k_cut) / width + 0.5, 0.0, 1.0)
    filt = 0.5 * (1 + np.cos(np.pi * edge))
    return np.fft.ifftn(np.fft.fftn(volume) * filt).real


def reference_volume(
    box: int = 128,
    pixel_size_A: float = 1.5,
    *,
    resolution_A: float | None = None,
    cache: str | os.PathLike | None = None,
) -> np.ndarray:
    """The apoferritin Coulomb potential (V) as a (box, box, box) float32 map, (z, y, x).

    The centre of mass lies on voxel ``box // 2`` along every axis; protein is positive and
    the solvent is 0 (in vacuo potential). ``resolution_A`` low-passes the map (raised-cosine
    edge at 1/resolution); by default the map holds everything up to Nyquist (2·pixel).
    The particle is computed in a box large enough to hold all of it and then cropped, so a
    small box cuts the particle instead of wrapping it around. Cached under ``cache``
    (default :func:`cache_dir`).
    """
    _check(box, pixel_size_A, resolution_A)
    box = int(box)
    key = f"{STRUCTURE_ID}-v{_CACHE_VERSION}-{box}-{pixel_size_A:.6f}-{resolution_A}"

    def compute() -> np.ndarray:
        radius_px = (structure_atoms().max_radius_A + 6.0) / pixel_size_A
        n_big = max(box, 2 * math.ceil(radius_px) + 2)
        n_big += n_big % 2 != box % 2  # same parity keeps the centre voxel aligned
        volume = _potential_on_grid(n_big, pixel_size_A)
        if resolution_A is not None:
            volume = lowpass(volume, pixel_size_A, resolution_A)
        lo = n_big // 2 - box // 2
        return volume[lo : lo + box, lo : lo + box, lo : lo + box]

    name = f"{STRUCTURE_ID}_box{box}_px{pixel_size_A:.4g}"
    return cached_map(key, name, box, cache, compute)


def cached_map(
    key: str,
    name: str,
    box: int,
    cache: str | os.PathLike | None,
    compute: Callable[[], np.ndarray],
) -> np.ndarray:
    """A (box, box, box) float32 map from the cache folder (``cache`` or
    :func:`cache_dir`), or ``compute()`` it and store it there. ``key`` says everything
    the map depends on; an unreadable entry is recomputed, an unwritable folder only
    costs time."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    directory = Path(cache) if cache is not None else cache_dir()
    path = directory / f"{name}_{digest}.npy"
    if path.exists():
        try:
            volume = np.load(path)
            if volume.shape == (box, box, box):
                return volume
        except (OSError, ValueError):
            pass
    volume = np.ascontiguousarray(compute(), dtype=np.float32)
    with contextlib.suppress(OSError):
        atomic_write(path, lambda handle: np.save(handle, volume))
    return volume


def blob_volume(
    box: int, rng: np.random.Generator, n_blobs: int = 14, sigma_px: tuple = (1.5, 3.5)
) -> np.ndarray:
    """An asymmetric volume (box³) of Gaussian blobs, sigma in ``sigma_px`` (pixels)."""
    centres, sigmas = [], []
    for _ in range(n_blobs):
        centres.append(rng.uniform(-box / 5, box / 5, 3))
        sigmas.append(rng.uniform(*sigma_px))
    return gaussian_blobs(box, np.array(centres), np.array(sigmas))


def gaussian_blobs(box: int, centres_px: np.ndarray, sigma_px) -> np.ndarray:
    """Gaussian blobs at (x, y, z) ``centres_px`` from the box centre (pixels), of
    ``sigma_px`` each (one value or one per blob); float32 box³."""
    g = np.arange(box) - box // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    sigmas = np.broadcast_to(np.asarray(sigma_px, dtype=float), (len(centres_px),))
    vol = np.zeros((box,) * 3)
    for c, s in zip(centres_px, sigmas, strict=True):
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * s * s))
    return vol.astype(np.float32)
