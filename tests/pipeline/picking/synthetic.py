"""A small stand-alone micrograph simulator for picker unit tests (numpy only).

Particles are clouds of Gaussian "atoms" inside a sphere of the given diameter, projected
along z after a random rotation; the projected phase (0.2 rad peak) goes through the
CTF (weak-phase approximation, B-factor envelope) and Poisson noise at the dose given.
Contaminants are dense, strongly absorbing spheres (ice/ethane balls), 3-6 diameters wide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.ctf_model import CTFParams, ctf_2d


@dataclass
class Truth:
    coords_px: np.ndarray
    contaminant_coords_px: np.ndarray
    contaminant_radii_px: np.ndarray
    ctf: CTFParams
    clean: np.ndarray  # noise-free CTF-applied phase image (contrast units)
    template: np.ndarray  # the shared particle's projected phase (same_particle=True)
    angles_deg: np.ndarray  # in-plane rotation of each particle


def particle_phase(diameter_px: float, box: int, rng: np.random.Generator, n_atoms: int = 60):
    r = 0.5 * diameter_px
    pts = rng.normal(size=(n_atoms * 3, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    pts *= (rng.uniform(0, 1, (len(pts), 1)) ** (1 / 3)) * (r * 0.8)
    pts = pts[:n_atoms]
    sigma = r * 0.25
    yy, xx = np.mgrid[:box, :box] - box / 2
    img = np.zeros((box, box))
    for x, y, _ in pts:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return img


def simulate(
    shape=(1024, 1024),
    pixel_size_A=2.0,
    diameter_A=140.0,
    n_particles=60,
    defocus_A=15000.0,
    dose_e_A2=40.0,
    n_contaminants=2,
    rng=None,
    peak_phase_rad=0.2,
    same_particle=False,
):
    rng = rng or np.random.default_rng(0)
    ny, nx = shape
    d = diameter_A / pixel_size_A
    margin = int(2 * d) // 2 + 2
    phase = np.zeros(shape)
    # contaminants: absorbing balls; particles are placed off them
    yy, xx = np.mgrid[:ny, :nx]
    ccoords, cradii = [], []
    absorb = np.zeros(shape)
    for _ in range(n_contaminants):
        rad = rng.uniform(1.5, 3.0) * d
        cx, cy = rng.uniform(rad, nx - rad), rng.uniform(rad, ny - rad)
        t = np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / rad**2, 0, None))
        absorb += 0.8 * t
        ccoords.append((cx, cy))
        cradii.append(rad)
    coords = []
    tries = 0
    while len(coords) < n_particles and tries < 100000:
        tries += 1
        x, y = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        if all((x - a) ** 2 + (y - b) ** 2 > (1.05 * d) ** 2 for a, b in coords) and all(
            (x - a) ** 2 + (y - b) ** 2 > (r + 0.6 * d) ** 2
            for (a, b), r in zip(ccoords, cradii, strict=True)
        ):
            coords.append((x, y))
    box = int(2 * d) | 1
    shared = particle_phase(d, box, rng)
    angles = rng.uniform(0, 360, len(coords))
    for (x, y), angle in zip(coords, angles, strict=True):
        if same_particle:
            from scipy.ndimage import rotate

            p = rotate(shared, angle, reshape=False, order=1)
        else:
            p = particle_phase(d, box, rng)
        p *= peak_phase_rad / p.max()
        ix, iy = int(round(x)), int(round(y))
        fx, fy = x - ix, y - iy
        p = np.real(
            np.fft.ifft2(
                np.fft.fft2(p)
                * np.exp(
                    -2j
                    * np.pi
                    * (np.fft.fftfreq(box)[None, :] * fx + np.fft.fftfreq(box)[:, None] * fy)
                )
            )
        )
        h = box // 2
        phase[iy - h : iy + h + 1, ix - h : ix + h + 1] += p
    ctf = CTFParams(defocus_A + 300, defocus_A - 300, 30.0, bfactor_A2=80.0)
    c = np.asarray(ctf_2d(shape, pixel_size_A, ctf, rfft=True))
    contrast = 2 * np.fft.irfft2(np.fft.rfft2(phase) * c, s=shape)
    mean_counts = dose_e_A2 * pixel_size_A**2
    intensity = mean_counts * np.clip(1 + contrast, 0, None) * np.exp(-absorb)
    image = rng.poisson(intensity).astype(np.float32)
    truth = Truth(
        np.asarray(coords),
        np.asarray(ccoords).reshape(-1, 2),
        np.asarray(cradii),
        ctf,
        contrast,
        shared,
        angles,
    )
    return image, truth


def field(size, n_particles, seed, n_contaminants=0, **kwargs):
    """``simulate`` on a ``size``² field at 2 Å/px with the random generator of ``seed``."""
    return simulate(
        shape=(size, size),
        pixel_size_A=2.0,
        n_particles=n_particles,
        n_contaminants=n_contaminants,
        rng=np.random.default_rng(seed),
        **kwargs,
    )


def apoferritin_field(size: int, n: int, defocus_A: float, ice_A: float, rng: int):
    """(image, truth) of ``n`` apoferritins on a ``size``² micrograph at 1.5 Å/px from the
    project's simulator (realistic excluded volume, no contaminants), astigmatism ±200 Å."""
    from pipeline.simulate.assemblies import assembly_mass_kDa, assembly_volume
    from pipeline.simulate.micrograph import protein_volume_A3, simulate_micrograph

    return simulate_micrograph(
        assembly_volume("apoferritin", 100, 1.5),
        (size, size),
        1.5,
        n_particles=n,
        ctf=CTFParams(defocus_A + 200.0, defocus_A - 200.0, 30.0),
        n_contaminants=0,
        ice_thickness_A=ice_A,
        rng=rng,
        excluded_volume_A3=protein_volume_A3(assembly_mass_kDa("apoferritin") / 0.93),
    )
