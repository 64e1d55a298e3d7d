"""Acquisition simulator: ground-truth map, particle stacks, micrographs, movies, sessions.

Everything is deterministic given a seed (``rng`` accepts a Generator or an int) and uses
RELION conventions (pipeline.geometry, pipeline.ctf_model). See each module for the model.
"""

from pipeline.simulate.acquisition import simulate_acquisition
from pipeline.simulate.micrograph import MicrographTruth, simulate_micrograph
from pipeline.simulate.movie import (
    LocalDeformation,
    MovieTruth,
    simulate_movie,
    write_gain,
    write_movie,
)
from pipeline.simulate.particles import (
    ParticleStackTruth,
    simulate_particle_stack,
    write_particle_stack,
)
from pipeline.simulate.projection import FourierProjector, project
from pipeline.simulate.volume import SimulationError, reference_volume, structure_atoms

__all__ = [
    "FourierProjector",
    "LocalDeformation",
    "MicrographTruth",
    "MovieTruth",
    "ParticleStackTruth",
    "SimulationError",
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
