"""Acquisition simulator: ground-truth map, particle stacks, micrographs, movies, sessions.

Specimen: human apoferritin, wwPDB 6Z6U (24-mer, ~500 kDa, shipped in ``pipeline/data``).

- :func:`reference_volume` — Coulomb potential (V), (z, y, x) float32, centre of mass on
  voxel box//2, cached on disk (:mod:`.volume`).
- :func:`project` — line integrals (V·Å) at RELION poses; ``shifts_A`` are
  rlnOriginX/YAngst (particle centre at box//2 − shift/pixel) (:mod:`.projection`).
- :class:`CTFDraw` — how each simulated CTF is drawn (defocus range, astigmatism, optics).
- :func:`simulate_particle_stack` / :func:`write_particle_stack` — CTF-modulated projections
  (pipeline.ctf_model sign: protein dark), white noise at SNR = mean signal variance / noise
  variance in the box; RELION 3.1 particles.star (+ particles_truth.star) (:mod:`.particles`).
- :func:`simulate_micrograph` — whole field in electron counts: particles in amorphous ice,
  contaminants, optional carbon edge, full-wave CTF with envelopes, Poisson at the dose
  (:mod:`.micrograph`).
- :class:`SpecimenMotion` — a movie's drift and local deformation amplitudes.
- :func:`simulate_movie` / :func:`write_movie` / :func:`write_gain` — frames with drift
  (content at (x, y) in frame 1 is at (x, y) + drift[f] in frame f; RELION's
  rlnMicrographShiftX/Y = −drift), smooth local deformation, per-frame Poisson, raw = counts
  / gain (:mod:`.movie`).
- :func:`simulate_acquisition` — an EPU-like session folder with movies, gain.mrc,
  acquisition.json and truth/ (:mod:`.acquisition`); ``cryofac simulate acquisition``.

Units: Å, pixels where named ``_px``, degrees, e/Å², kV, mm. Everything is deterministic
given a seed (``rng`` takes a Generator or an int).
"""

from pipeline.simulate.acquisition import simulate_acquisition
from pipeline.simulate.micrograph import MicrographTruth, simulate_micrograph
from pipeline.simulate.movie import (
    LocalDeformation,
    MovieTruth,
    SpecimenMotion,
    simulate_movie,
    write_gain,
    write_movie,
)
from pipeline.simulate.particles import (
    CTFDraw,
    ParticleStackTruth,
    simulate_particle_stack,
    write_particle_stack,
)
from pipeline.simulate.projection import FourierProjector, project
from pipeline.simulate.volume import SimulationError, reference_volume, structure_atoms

__all__ = [
    "CTFDraw",
    "FourierProjector",
    "LocalDeformation",
    "MicrographTruth",
    "MovieTruth",
    "ParticleStackTruth",
    "SimulationError",
    "SpecimenMotion",
    "project",
    "reference_volume",
    "simulate_acquisition",
    "simulate_micrograph",
    "simulate_movie",
    "simulate_particle_stack",
    "structure_atoms",
    "write_gain",
    "write_movie",
    "write_particle_stack",
]
