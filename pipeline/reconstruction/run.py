"""The ``cryofac reconstruct`` workflow: 2D classification → ab-initio → gold-standard
refinement → post-processing, in a resumable output folder.

Each stage writes its result atomically and is skipped when the folder already
holds it (``class2d.npz``, ``abinitio.mrc``, ``refine.npz`` + half-maps); the final
``result.json`` is written last.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cryofac.errors import CryofacError


class ReconstructionError(CryofacError):
    """The reconstruction cannot run with these inputs or options."""


def _save_npz(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_fsc_star(path: Path, curve: np.ndarray, box: int, pixel_size_A: float) -> None:
    """``fsc.star``: rlnSpectralIndex, rlnResolution (1/Å), rlnAngstromResolution, rlnFourierShellCorrelation."""
    import pandas as pd
    import starfile

    from pipeline.reconstruction.fsc import shell_frequencies

    freq = shell_frequencies(box, pixel_size_A)
    with np.errstate(divide="ignore"):
        angstrom = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 999.0)
    frame = pd.DataFrame(
        {
            "rlnSpectralIndex": np.arange(len(curve)),
            "rlnResolution": freq,
            "rlnAngstromResolution": angstrom,
            "rlnFourierShellCorrelation": np.asarray(curve, dtype=float),
        }
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    starfile.write({"fsc": frame}, tmp, overwrite=True, float_format="%.6f")
    os.replace(tmp, path)


#: Independent ab-initio runs per point group; each is refined in full and the
#: refinement whose map the particles fit best (:func:`refine.particle_fit`) is kept. For
#: O (apoferritin) about one ab-initio run in four still leads refinement to a wrong map
#: that both half-maps reproduce, and the particles fit such a map clearly worse than
#: the right one (BENCHMARKS.md, issues 5 and 10).
ABINITIO_ATTEMPTS = {"O": 2}


#: Below this consistency with the full group (:func:`symmetry.symmetry_consistency` at
#: the ab-initio's resolution) a subgroup ab-initio map is averaged over the full group
#: as it is rather than turned into its frame first. Simulated apoferritin's truth scores
#: 0.97 with O at 15 Å; the C4 ab-initio maps of the demo's particles 0.10-0.36, right
#: and wrong ones alike (BENCHMARKS.md, issue 10).
CONSISTENT_ABINITIO = 0.5


#: Refinements from different ab-initio runs whose maps agree (FSC 0.5 after alignment)
#: only worse than this many times the kept map's half-map resolution went to different
#: maps: the result depends on the start, and ``result.json`` warns.
DISAGREEMENT = 1.5


def _into_full_group(volume, sub: str, full: str, pix: float, say) -> tuple[np.ndarray, dict]:
    """A subgroup ab-initio map made a start for the full group, and what was found.

    The subgroup's axis is z but the turn about it is the ab-initio's own: it is found
    (:func:`symmetry.orient_to_group`) and the map turned into the full group's frame
    before averaging over the group. A map that is not consistent with the full group
    even so is averaged unturned, as before the turn was searched: on the demo's
    particles such maps were the rule, and refinement (marching its resolution) led most
    of them to the right map all the same (BENCHMARKS.md, issue 10).
    """
    from pipeline import backend
    from pipeline.reconstruction.abinitio import END_RESOLUTION_A, centre_of_mass_px, shift_volume
    from pipeline.reconstruction.symmetry import about_z, orient_to_group, symmetrise_volume

    resolution = max(END_RESOLUTION_A, 2.2 * pix)
    volume = shift_volume(volume, -centre_of_mass_px(volume))  # the group acts about the centre
    turn, consistency = orient_to_group(volume, sub, full, pix, resolution)
    consistent = consistency >= CONSISTENT_ABINITIO
    say(
        f"ab-initio map in {sub}: {full} consistency {consistency:.2f} at {resolution:.0f} Å"
        + (f", turned {turn:.1f}° about z into the {full} frame" if consistent else " (low)")
    )
    rotation = about_z(turn) if consistent else None
    out = backend.to_numpy(symmetrise_volume(volume, full, rotation=rotation))
    info = {
        "symmetry": sub,
        "consistency": round(float(consistency), 4),
        "consistency_resolution_A": round(resolution, 2),
        "turn_deg": round(turn, 2) if consistent else None,
    }
    return out, info


def _attempt_records(results: list, fits: list[float], kept: int, pix: float) -> list[dict]:
    """Per ab-initio run: its refinement's half-map resolution (Å), the particles' fit,
    whether it was kept, and how far (Å, FSC 0.5 after alignment) its map agrees with the
    kept one."""
    from pipeline.reconstruction.align import aligned_resolution_A

    reference = results[kept].average_map
    records = []
    for i, (result, fit) in enumerate(zip(results, fits, strict=True)):
        record = {
            "resolution_A": round(float(result.resolution_A), 2),
            "fit": round(float(fit), 2),
            "kept": i == kept,
        }
        if i != kept:
            record["agreement_A"] = round(
                aligned_resolution_A(result.average_map, reference, pix), 2
            )
        records.append(record)
    return records


def _warnings(abinitio_info: dict, resolution_A: float) -> list[str]:
    """Plain-language warnings about the result, for users (``result.json`` ``warnings``)."""
    attempts = abinitio_info.get("attempts") or []
    others = [a for a in attempts if not a["kept"]]
    apart = [a for a in others if a["agreement_A"] > DISAGREEMENT * resolution_A]
    if not apart:
        return []
    kept = next(a for a in attempts if a["kept"])
    worst = max(apart, key=lambda a: a["agreement_A"])
    return [
        f"{len(apart)} of the {len(attempts)} ab-initio runs led refinement to a different map "
        f"(it agrees with the kept map only to {worst['agreement_A']:.1f} Å, against the kept "
        f"map's {resolution_A:.1f} Å). The kept map is the one the particles fit best "
        f"({kept['fit']:.4g} against {worst['fit']:.4g}), but a result that depends on the "
        "start may be wrong even though its half-maps agree: the half-map resolution cannot "
        "see an error both halves inherit from the same start. Check the map (e.g. against "
        "a known structure), or rerun into a new --out folder with another --seed."
    ]


def run_reconstruction(
    particles_star: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    symmetry: str = "C1",
    n_classes: int = 4,
    class_iterations: int = 6,
    abinitio_iterations: int = 30,
    refine_iterations: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run (or resume) the whole reconstruction; returns the ``result.json`` content."""
    from pipeline import backend
    from pipeline.io.mrc import read_mrc, write_mrc
    from pipeline.reconstruction import abinitio, class2d, postprocess, refine, stage_cache
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.symmetry import (
        abinitio_symmetry,
        symmetry_matrices,
    )

    say = progress or (lambda message: None)
    symmetry_matrices(symmetry)  # validate early
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    particles = load_particles(particles_star)
    if n_classes < 1:
        raise ReconstructionError(f"--classes must be at least 1 (got {n_classes})")
    if len(particles) < n_classes:
        raise ReconstructionError(
            f"{particles_star}: {len(particles)} particles are fewer than the {n_classes} 2D classes"
        )
    if len(particles) < 20:
        raise ReconstructionError(
            f"{particles_star}: {len(particles)} particles are too few for a gold-standard reconstruction"
        )
    pix, box = particles.pixel_size_A, particles.box
    ws = refine.build_workspace(particles.images, particles.ctf_params, pix, symmetry)
    timings["load_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    # a stage result is reused only if made from these particles, options and code
    star_dir = Path(particles_star).resolve().parent
    stacks = {
        str(star_dir / name.partition("@")[2])
        for name in particles.table.particles["rlnImageName"].astype(str)
    }
    options = {
        "class2d": {"n_classes": n_classes, "class_iterations": class_iterations, "seed": seed},
        "abinitio": {"symmetry": symmetry, "abinitio_iterations": abinitio_iterations},
        "refine": {"symmetry": symmetry, "refine_iterations": refine_iterations},
    }
    keys = stage_cache.stage_keys(stage_cache.particles_digest(particles_star, stacks), options)
    for stage in stage_cache.prepare(out, keys):
        say(f"{stage}: earlier result made with other inputs, options or code; recomputed")

    # 2D classification
    t = time.perf_counter()
    path_2d = out / "class2d.npz"
    if path_2d.exists():
        saved = np.load(path_2d)
        assignment, selected = saved["assignment"], saved["selected"]
        counts, scores = saved["counts"], saved["scores"]
        timings["class2d_s"] = float(saved["seconds"])
        say("2D classification: reused")
    else:
        c2d = class2d.classify_2d(ws, n_classes, rng, n_iterations=class_iterations, progress=say)
        assignment, selected, counts, scores = c2d.assignment, c2d.selected, c2d.counts, c2d.scores
        write_mrc(out / "class_averages.mrcs", c2d.averages, pix, stack=True)
        timings["class2d_s"] = time.perf_counter() - t
        _save_npz(
            path_2d,
            assignment=assignment,
            selected=selected,
            counts=counts,
            scores=scores,
            seconds=timings["class2d_s"],
        )
    keep = np.flatnonzero(selected[assignment])

    # ab-initio (several runs for some groups, each refined to choose between them)
    t = time.perf_counter()
    path_ab = out / "abinitio.mrc"
    refined = None  # the kept run's refinement, when the runs were refined to choose
    if path_ab.exists():
        initial, _ = read_mrc(path_ab)
        say("ab-initio: reused")
        abinitio_info = json.loads((out / "abinitio.json").read_text())
        timings["abinitio_s"] = float(abinitio_info["seconds"])
    else:
        full, sub = symmetry.strip().upper(), abinitio_symmetry(symmetry)
        if sub != full:
            say(f"ab-initio in {sub} (a subgroup of {symmetry}), then symmetrised to {symmetry}")
        attempts = ABINITIO_ATTEMPTS.get(full, 1)
        starts, infos, results, fits = [], [], [], []
        refine_s = 0.0
        for attempt in range(attempts):
            candidate = abinitio.abinitio(
                dataclasses.replace(ws, symmetry=sub),
                rng,
                subset=keep,
                n_iterations=abinitio_iterations,
                progress=say,
            )
            info = {"symmetry": sub}
            if sub != full:
                candidate, info = _into_full_group(candidate, sub, full, pix, say)
            starts.append(candidate)
            infos.append(info)
            if attempts == 1:
                break
            # refined in full: where a start leads shows only at the refined resolution
            t_refine = time.perf_counter()
            result = refine.refine(
                ws, candidate, rng, subset=keep, max_iterations=refine_iterations, progress=say
            )
            fits.append(refine.particle_fit(ws, result, keep))
            results.append(result)
            refine_s += time.perf_counter() - t_refine
            say(
                f"ab-initio attempt {attempt + 1}/{attempts}: refined to "
                f"{result.resolution_A:.2f} Å, particles' fit {fits[-1]:.4g}"
            )
        kept = int(np.argmax(fits)) if fits else 0
        initial, abinitio_info = starts[kept], infos[kept]
        if results:
            refined = results[kept]
            abinitio_info["attempts"] = _attempt_records(results, fits, kept, pix)
            timings["refine_s"] = refine_s
        write_mrc(path_ab, initial, pix)
        timings["abinitio_s"] = time.perf_counter() - t - refine_s
        abinitio_info["seconds"] = timings["abinitio_s"]
        _write_text(out / "abinitio.json", json.dumps(abinitio_info))

    # gold-standard refinement
    t = time.perf_counter()
    path_ref = out / "refine.npz"
    if path_ref.exists() and (out / "half1.mrc").exists() and (out / "half2.mrc").exists():
        saved = np.load(path_ref)
        rotations, origins, halves = saved["rotations"], saved["origins_px"], saved["halves"]
        keep = saved["subset"]
        half1, _ = read_mrc(out / "half1.mrc")
        half2, _ = read_mrc(out / "half2.mrc")
        history = json.loads(str(saved["history"]))
        timings["refine_s"] = float(saved["seconds"])
        say("refinement: reused")
    else:
        result = (
            refined
            if refined is not None
            else refine.refine(
                ws, initial, rng, subset=keep, max_iterations=refine_iterations, progress=say
            )
        )
        rotations, origins, halves = result.rotations, result.origins_px, result.halves
        half1, half2 = result.half_maps
        history = result.history
        write_mrc(out / "half1.mrc", half1, pix)
        write_mrc(out / "half2.mrc", half2, pix)
        if refined is None:
            timings["refine_s"] = time.perf_counter() - t
        _save_npz(
            path_ref,
            rotations=rotations,
            origins_px=origins,
            halves=halves,
            subset=keep,
            history=json.dumps(history),
            seconds=timings["refine_s"],
        )

    # post-processing
    t = time.perf_counter()
    combined = 0.5 * (half1 + half2)
    mask = postprocess.soft_mask(combined, pix)
    # FSC with the same loose spherical mask as the refinement: a tight solvent mask
    # computed from the half-maps themselves inflates the FSC (no phase-randomisation
    # correction here), so it is used for the Guinier fit only.
    sphere = backend.to_numpy(refine.soft_sphere(box, 0.45 * box))
    curve = fsc(half1 * sphere, half2 * sphere)
    resolution = resolution_at(curve, box, pix, 0.143)
    b_fit = postprocess.guinier_bfactor(combined * mask, pix, 10.0, max(resolution, 2 * pix))

    final = backend.to_numpy(postprocess.sharpen(combined, pix, b_fit, resolution, curve))
    write_mrc(out / "mask.mrc", mask, pix)
    write_mrc(out / "map.mrc", final, pix)
    write_fsc_star(out / "fsc.star", curve, box, pix)
    _write_particles(out, particles, keep, rotations, origins, halves, assignment)
    from pipeline.plots.reconstruction import plot_fsc, plot_slices
    from pipeline.reconstruction.fsc import shell_frequencies

    plot_fsc(
        out / "fsc.png",
        shell_frequencies(box, pix),
        {"half-maps (spherical mask)": curve},
        resolution,
    )
    plot_slices(out / "slices.png", final, f"{resolution:.2f} Å")
    timings["postprocess_s"] = time.perf_counter() - t
    timings["total_s"] = sum(v for k, v in timings.items() if k.endswith("_s"))
    result_json = {
        "resolution_A": resolution,
        "b_factor_A2": -b_fit,
        "guinier_b_A2": b_fit,
        "n_particles": int(len(keep)),
        "n_particles_input": int(len(particles)),
        "classes_kept": [int(c) + 1 for c in np.flatnonzero(selected)],
        "class_counts": [int(c) for c in counts],
        "class_scores": [float(s) for s in scores],
        "symmetry": symmetry,
        "pixel_size_A": pix,
        "box_px": box,
        "refine_history": history,
        "abinitio": {k: v for k, v in abinitio_info.items() if k != "seconds"},
        "warnings": _warnings(abinitio_info, resolution),
        "timings": timings,
        # what was computed: every option, the code version and each stage's cache key
        "options": options,
        "code_version": stage_cache.code_version(),
        "stage_keys": keys,
    }
    _write_text(out / "result.json", json.dumps(result_json, indent=2))
    return result_json


def _write_particles(out, particles, keep, rotations, origins, halves, assignment) -> None:
    """``particles.star`` and ``particles.cs`` of the refined particles with their poses."""
    from pipeline.geometry import matrix_to_euler
    from pipeline.io.cs import write_cs
    from pipeline.io.particles import ParticleTable, write_particles_star

    table = particles.table
    rows = table.particles.iloc[keep].copy()
    # image paths relative to the output folder
    source = Path(particles.star_path).resolve().parent
    names = []
    for name in rows["rlnImageName"].astype(str):
        idx, _, stack = name.partition("@")
        path = Path(stack) if Path(stack).is_absolute() else source / stack
        names.append(f"{idx}@{os.path.relpath(path, Path(out).resolve())}")
    rows["rlnImageName"] = names
    rot, tilt, psi = matrix_to_euler(rotations[keep])
    rows["rlnAngleRot"], rows["rlnAngleTilt"], rows["rlnAnglePsi"] = rot, tilt, psi
    # internally the particle sits at centre + origin; RELION's rlnOriginX/YAngst is the
    # shift that re-centres it (RELION 3.1, as the simulator writes it): the negative
    rows["rlnOriginXAngst"] = -origins[keep, 0] * particles.pixel_size_A
    rows["rlnOriginYAngst"] = -origins[keep, 1] * particles.pixel_size_A
    rows["rlnRandomSubset"] = halves[keep] + 1
    rows["rlnClassNumber"] = assignment[keep] + 1
    posed = ParticleTable(optics=table.optics.copy(), particles=rows.reset_index(drop=True))
    write_particles_star(out / "particles.star", posed)
    write_cs(out / "particles.cs", posed, base_dir=out)
