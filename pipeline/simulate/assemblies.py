"""Particles of other shapes and sizes, built from the shipped apoferritin subunits.

Without network access to the PDB, the picking benchmark needs particles that are not
spheres: these are documented synthetic assemblies of real 6Z6U subunits (each a ~20 kDa
four-helix bundle, ~55 × 25 × 20 Å), arranged as

- ``"apoferritin"``: the 24-mer shell itself (~430 kDa without hydrogens, O, ~130 Å),
- ``"pentamer"``: subunit A and its four nearest neighbours in the shell (~90 kDa without hydrogens, C1,
  a curved sheet, ~115 × 85 × 55 Å),
- ``"rod"``: the antiparallel dimer of A and its nearest neighbour, repeated three times
  along the helix axis with a 35° twist per repeat (~110 kDa, ~220 × 60 Å),
- ``"cap"``: the shell cut by a plane of generic orientation (the subunits whose centre
  lies above it) with a pentamer docked on the outside, off-axis (~400 kDa, C1, ~200 Å).

They are not real complexes (their interfaces are invented), but their projections have
the sizes, shapes and protein density of real ones. The potential is computed exactly as
for apoferritin (:func:`pipeline.simulate.volume.reference_volume`) and cached on disk.
"""

from __future__ import annotations

import math
import os

import numpy as np

from pipeline.simulate.volume import (
    SimulationError,
    _check,
    _potential_on_grid,
    cached_map,
    load_structure,
)

ASSEMBLIES = ("apoferritin", "pentamer", "rod", "cap")
_VERSION = 1


def _chain_centres(structure) -> dict[str, np.ndarray]:
    return {
        chain.name: np.asarray([a.pos.tolist() for r in chain for a in r]).mean(0)
        for chain in structure[0]
    }


def _keep_chains(structure, names: list[str]):
    out = structure.clone()
    model = out[0]
    for name in [c.name for c in model if c.name not in names]:
        model.remove_chain(name)
    return out


def _transformed_copy(structure, rotation: np.ndarray, shift_A: np.ndarray, suffix: str):
    """Chains of ``structure`` with x → R·x + shift, renamed with ``suffix``."""
    import gemmi

    out = structure.clone()
    for chain in out[0]:
        chain.name = f"{chain.name}{suffix}"
        for residue in chain:
            for atom in residue:
                x = rotation @ np.asarray(atom.pos.tolist()) + shift_A
                atom.pos = gemmi.Position(*x)
    return out


def _merge(parts):
    merged = parts[0].clone()
    for part in parts[1:]:
        for chain in part[0]:
            merged[0].add_chain(chain, unique_name=True)
    return merged


def _rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = axis / np.linalg.norm(axis)
    return Rotation.from_rotvec(math.radians(angle_deg) * axis).as_matrix()


def _pentamer(shell):
    centres = _chain_centres(shell)
    names = list(centres)
    a = centres[names[0]]
    nearest = sorted(names, key=lambda n: np.linalg.norm(centres[n] - a))[:5]
    return _keep_chains(shell, nearest)


def assembly_structure(name: str):
    """The gemmi.Structure of assembly ``name`` (one of :data:`ASSEMBLIES`)."""
    shell = load_structure()
    if name == "apoferritin":
        return shell.clone()
    if name == "pentamer":
        return _pentamer(shell)
    centres = _chain_centres(shell)
    names = list(centres)
    if name == "rod":
        a = centres[names[0]]
        partner = sorted(names, key=lambda n: np.linalg.norm(centres[n] - a))[1]
        dimer = _keep_chains(shell, [names[0], partner])
        xyz = np.asarray([at.pos.tolist() for ch in dimer[0] for r in ch for at in r])
        centre = xyz.mean(0)
        _, _, vt = np.linalg.svd(xyz - centre, full_matrices=False)
        axis = vt[0]
        extent = np.ptp((xyz - centre) @ axis)
        parts = []
        for i in range(3):
            rot = _rotation_about(axis, 35.0 * i)
            shift = centre - rot @ centre + axis * (extent + 4.0) * i
            parts.append(_transformed_copy(dimer, rot, shift, f"r{i}"))
        return _merge(parts)
    if name == "cap":
        xyz = np.asarray(list(centres.values()))
        centre = xyz.mean(0)
        u = np.array([0.31, 0.57, 0.76])
        u /= np.linalg.norm(u)
        above = [n for n in names if (centres[n] - centre) @ u > -12.0]
        cap = _keep_chains(shell, above)
        pent = _pentamer(shell)
        p_xyz = np.asarray([at.pos.tolist() for ch in pent[0] for r in ch for at in r]).mean(0)
        # dock the pentamer on the outside, 50° off the cut's axis
        v = np.cross(u, [1.0, 0.0, 0.0])
        direction = _rotation_about(v, 50.0) @ u
        target = centre + direction * 95.0
        docked = _transformed_copy(pent, np.eye(3), target - p_xyz, "d")
        return _merge([cap, docked])
    raise SimulationError(f"unknown assembly {name!r} (choose from {', '.join(ASSEMBLIES)})")


def assembly_mass_kDa(name: str) -> float:
    """Mass of the assembly's atoms (no hydrogens) in kDa."""
    structure = assembly_structure(name)
    return sum(a.element.weight * a.occ for ch in structure[0] for r in ch for a in r) / 1000.0


def assembly_volume(
    name: str,
    box: int,
    pixel_size_A: float,
    *,
    cache: str | os.PathLike | None = None,
) -> np.ndarray:
    """Coulomb potential (V) of assembly ``name``, (box, box, box) float32, (z, y, x), centre
    of mass on voxel box//2; cached under ``cache`` (default :func:`cache_dir`)."""
    _check(box, pixel_size_A, None)
    if name == "apoferritin":
        from pipeline.simulate.volume import reference_volume

        return reference_volume(box, pixel_size_A, cache=cache)
    key = f"{name}-v{_VERSION}-{box}-{pixel_size_A:.6f}"
    return cached_map(
        key,
        f"assembly_{name}_box{box}_px{pixel_size_A:.4g}",
        int(box),
        cache,
        lambda: _potential_on_grid(int(box), pixel_size_A, structure=assembly_structure(name)),
    )
