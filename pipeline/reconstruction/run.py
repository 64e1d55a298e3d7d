"""The ``cryofac reconstruct`` workflow: 2D classification → ab-initio → gold-standard
refinement → post-processing, in a resumable output folder.

Each stage is a function below (:func:`stage_class2d`, :func:`stage_abinitio`,
:func:`stage_refine`, :func:`stage_postprocess`) that writes its result atomically
with a key file (``<stage>.key``): a hash of the inputs (the particles STAR and its
stacks' sizes and times), the options of this stage and every earlier one, and the
code of :mod:`pipeline.reconstruction`. A rerun reuses a stage's files only when the
key matches; otherwise the stage (and so every later one) runs again. ``result.json``
(with every option) is written last; ``progress.json`` holds the stage and how far it is.

Stages work on Fourier-cropped particles matched to the resolution they search at:
2D classification at ``Class2DOptions.resolution_A``, ab-initio at its end resolution,
refinement growing the box as its resolution marches (:meth:`Workspace.cropped`).
Particle images are read from their stacks in chunks; their Fourier values and CTFs stay
in memory only within :attr:`ReconstructOptions.resident_MB` (``--memory``) and are
otherwise read again for every batch (:class:`workspace.StreamedStack`), so memory does
not grow with the particle count beyond compact per-particle arrays (poses, origins,
halves, classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from cryofac.errors import CryofacError
from cryofac.fileio import atomic_path, atomic_write
from pipeline.reconstruction.options import (
    Class2DOptions,
    PostprocessOptions,
    ReconstructOptions,
    RefineOptions,
)


class ReconstructionError(CryofacError):
    """The reconstruction cannot run with these inputs or options."""


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def write_fsc_star(
    path: Path, curve: np.ndarray, box: int, pixel_size_A: float, extra: dict | None = None
) -> None:
    """``fsc.star``: rlnSpectralIndex, rlnResolution (1/Å), rlnAngstromResolution,
    rlnFourierShellCorrelation, plus ``extra`` columns (same length)."""
    import pandas as pd
    import starfile

    from pipeline.reconstruction.fsc import shell_frequencies

    freq = shell_frequencies(box, pixel_size_A)
    with np.errstate(divide="ignore"):
        angstrom = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 999.0)
    columns = {
        "rlnSpectralIndex": np.arange(len(curve)),
        "rlnResolution": freq,
        "rlnAngstromResolution": angstrom,
        "rlnFourierShellCorrelation": np.asarray(curve, dtype=float),
    }
    for name, values in (extra or {}).items():
        columns[name] = np.asarray(values, dtype=float)
    frame = pd.DataFrame(columns)
    with atomic_path(path) as tmp:
        starfile.write({"fsc": frame}, tmp, overwrite=True, float_format="%.6f")


def code_version() -> str:
    """Hash of the source of :mod:`pipeline.reconstruction` (part of every stage key)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def inputs_digest(star_path: str | os.PathLike, stacks: list[str]) -> str:
    """Hash of the particles STAR file's bytes and of its stacks' paths, sizes and times."""
    star = Path(star_path)
    digest = hashlib.sha256(star.read_bytes())
    for stack in sorted(set(stacks)):
        path = Path(stack) if Path(stack).is_absolute() else star.parent / stack
        try:
            st = path.stat()
            digest.update(f"{stack}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"{stack}:missing".encode())
    return digest.hexdigest()[:16]


def stage_key(previous: str, *parts) -> str:
    """A stage's key: the previous stage's key and this stage's options (JSON)."""
    text = json.dumps([previous, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _reusable(out: Path, stage: str, key: str, *files: str) -> bool:
    key_file = out / f"{stage}.key"
    return (
        key_file.exists()
        and key_file.read_text().strip() == key
        and all((out / name).exists() for name in files)
    )


def _reuse(out: Path, stage: str, key: str, say, label: str, npz: str, *files: str):
    """The saved arrays (``npz`` in ``out``) of a stage whose key matches, else None."""
    if not _reusable(out, stage, key, npz, *files):
        return None
    say(f"{label}: reused", 1.0)
    return np.load(out / npz)


def _mark(out: Path, stage: str, key: str) -> None:
    _write_text(out / f"{stage}.key", key + "\n")


def _into_full_group(
    volume,
    sub: str,
    full: str,
    pix: float,
    say,
    end_resolution_A: float = 15.0,
    consistent: float = 0.5,
) -> tuple[np.ndarray, dict]:
    """A subgroup ab-initio map made a start for the full group, and what was found.

    The subgroup's axis is z but the turn about it is the ab-initio's own: it is found
    (:func:`symmetry.orient_to_group`) and the map turned into the full group's frame
    before averaging over the group. A map whose consistency with the full group is
    below ``consistent`` (:attr:`AbinitioOptions.consistent`) is averaged unturned, as
    before the turn was searched: on the demo's particles such maps were the rule, and
    refinement (marching its resolution) led most of them to the right map all the same
    (BENCHMARKS.md, issue 10).
    """
    from pipeline import backend
    from pipeline.reconstruction.grids import centre_of_mass_px, shift_volume
    from pipeline.reconstruction.symmetry import about_z, orient_to_group, symmetrise_volume

    resolution = max(end_resolution_A, 2.2 * pix)
    volume = shift_volume(volume, -centre_of_mass_px(volume))  # the group acts about the centre
    turn, consistency = orient_to_group(volume, sub, full, pix, resolution)
    is_consistent = consistency >= consistent
    say(
        f"ab-initio map in {sub}: {full} consistency {consistency:.2f} at {resolution:.0f} Å"
        + (f", turned {turn:.1f}° about z into the {full} frame" if is_consistent else " (low)")
    )
    rotation = about_z(turn) if is_consistent else None
    out = backend.to_numpy(symmetrise_volume(volume, full, rotation=rotation))
    info = {
        "symmetry": sub,
        "consistency": round(float(consistency), 4),
        "consistency_resolution_A": round(resolution, 2),
        "turn_deg": round(turn, 2) if is_consistent else None,
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


def _warnings(abinitio_info: dict, post: dict, options: ReconstructOptions) -> list[str]:
    """Plain-language warnings about the result, for users (``result.json`` ``warnings``,
    the summary, the run page and the log): the map may be wrong when

    - the two halves' independent ab-initio maps disagree
      (:attr:`AbinitioOptions.agreement_factor`), even when refinement brought the
      halves together (it can lead both to the same wrong map);
    - ab-initio runs lead refinement to maps that agree only worse than
      :attr:`ReconstructOptions.disagreement` times the kept map's resolution;
    - the half-maps agree better than :attr:`PostprocessOptions.support_factor` times
      what their particles support (:func:`support.particle_support`);
    - the claim is Nyquist (within :attr:`PostprocessOptions.nyquist_factor`): a bound;
    - the mask correction failed (:attr:`PostprocessOptions.correction_tolerance`): the
      claim is then the unmasked FSC's;
    - the half-maps agree mostly through their spherical averages (what does not depend
      on orientation): without them only :attr:`ReconstructOptions.spherical_factor`
      times worse than the claim or more."""
    resolution_A = float(post["resolution_A"])
    out = []
    limit = abinitio_info.get("halves_agreement_limit_A")
    if abinitio_info.get("independent_halves") and not abinitio_info.get("halves_agree", True):
        # warned even when refinement brought the halves together: on the held-out rod
        # (BENCHMARKS.md, recon22) halves 107 Å apart after ab-initio refined to half-maps
        # agreeing to 25.8 Å on a map 40.7 Å from the truth
        out.append(
            "The two halves of the particles, each given its own ab-initio model, found "
            f"different structures (their models agree only to "
            f"{abinitio_info['halves_agreement_A']:.1f} Å, where {limit:.1f} Å or better is "
            f"expected, after {abinitio_info['runs_per_half']} run(s) per half). Refinement "
            "may have led both halves to the same wrong map, and then the resolution claimed "
            f"({resolution_A:.1f} Å) is too good: check the map, or rerun into a new --out "
            "folder with another --seed or more particles."
        )
    attempts = abinitio_info.get("attempts") or []
    apart = [
        a
        for a in attempts
        if not a["kept"] and a["agreement_A"] > options.disagreement * resolution_A
    ]
    if apart:
        kept = next(a for a in attempts if a["kept"])
        worst = max(apart, key=lambda a: a["agreement_A"])
        out.append(
            f"{len(apart)} of the {len(attempts)} ab-initio runs led refinement to a different "
            f"map (it agrees with the kept map only to {worst['agreement_A']:.1f} Å, against "
            f"the kept map's {resolution_A:.1f} Å). The kept map is the one the particles fit "
            f"best ({kept['fit']:.4g} against {worst['fit']:.4g}), but a result that depends "
            "on the start may be wrong even though its half-maps agree. Check the map (e.g. "
            "against a known structure), or rerun into a new --out folder with another --seed."
        )
    support = post.get("particle_support")
    if (
        support
        and support["halves_A"] * options.postprocess.support_factor < support["supported_A"]
    ):
        out.append(
            f"The half-maps agree better than their particles can make them: they agree to "
            f"{support['halves_A']:.1f} Å (unmasked FSC 0.143), but the "
            f"{support['n_particles']} particles fit the maps only well enough for about "
            f"{support['supported_A']:.1f} Å. The two halves may share an error (a wrong map "
            f"both were led to); treat {support['supported_A']:.1f} Å as the resolution, and "
            "check the map."
        )
    nyquist = 2.0 * float(post.get("pixel_size_A", 0.0))
    if resolution_A <= options.postprocess.nyquist_factor * nyquist:
        out.append(
            f"The half-maps agree all the way to Nyquist ({nyquist:.1f} Å, twice the pixel "
            f"size): the claimed {resolution_A:.1f} Å is a limit of the pixel size, not a "
            "measurement, and half-maps that agree to the last shell may share an error. "
            "Treat it as a bound, check the map, and use a smaller pixel size (less binning) "
            "to measure the resolution."
        )
    if post.get("mask_correction_failed"):
        out.append(
            f"The solvent-mask correction failed: the masked half-maps' FSC corrected for "
            f"the mask gives {post['resolution_mask_corrected_A']:.1f} Å, worse than the "
            f"unmasked half-maps' {post['resolution_unmasked_A']:.1f} Å, which a mask cannot "
            f"make worse. The claim is the unmasked FSC's {resolution_A:.1f} Å (the map may "
            "be better); check the mask (mask.mrc) and the FSC curves (fsc.png)."
        )
    other = post.get("resolution_other_mask_A")
    if other is not None:
        low, high = sorted((float(other), float(resolution_A)))
        if high > (1.0 + options.postprocess.mask_sensitivity) * low:
            out.append(
                f"The claimed resolution depends on the solvent mask: {resolution_A:.1f} Å "
                f"with a {post['mask_edge_A']:.0f} Å soft edge, {other:.1f} Å with a "
                f"{post['other_mask_edge_A']:.0f} Å edge. A claim that moves with the mask "
                f"does not measure the map; take {high:.1f} Å at best, and check the map."
            )
    aniso = post.get("resolution_without_spherical_average_A")
    if aniso is not None and aniso > options.spherical_factor * resolution_A:
        out.append(
            f"The half-maps agree to {resolution_A:.1f} Å mostly through their radial "
            f"profile: what depends on the particles' orientations agrees only to {aniso:.1f} Å. "
            "The orientations may not have been found (e.g. a featureless or nearly spherical "
            f"particle); treat {aniso:.1f} Å as the resolution, and check the map."
        )
    return out


@dataclasses.dataclass
class Class2DStage:
    """What 2D classification left for the later stages."""

    assignment: np.ndarray
    selected: np.ndarray
    counts: np.ndarray
    scores: np.ndarray
    seconds: float
    box_px: int

    @property
    def keep(self) -> np.ndarray:
        return np.flatnonzero(self.selected[self.assignment])


def chosen_classes(counts: np.ndarray, keep_classes) -> np.ndarray:
    """The selection mask (C,) bool of 2D classes ``keep_classes`` (1-based numbers);
    refused in plain words when a number is not a class or the classes hold no particle."""
    n = len(counts)
    numbers = sorted({int(c) for c in keep_classes})
    wrong = [c for c in numbers if not 1 <= c <= n]
    if not numbers or wrong:
        raise ReconstructionError(
            f"--keep-classes: {', '.join(map(str, wrong)) or 'nothing'} "
            f"{'is' if len(wrong) == 1 else 'are'} not among the 2D classes 1–{n} of this run "
            "(see class_averages.mrcs and class_counts in result.json)"
        )
    selected = np.zeros(n, dtype=bool)
    selected[np.asarray(numbers) - 1] = True
    if int(np.sum(np.asarray(counts)[selected])) < 2:
        raise ReconstructionError(
            f"--keep-classes {','.join(map(str, numbers))}: these classes hold "
            f"{int(np.sum(np.asarray(counts)[selected]))} particle(s); at least 2 are needed"
        )
    return selected


def stage_class2d(ws, out: Path, options: Class2DOptions, seed: int, key: str, say):
    """2D classification on particles cropped to ``options.resolution_A``; reused when
    ``class2d.key`` matches ``key``."""
    from pipeline.io.mrc import write_mrc
    from pipeline.reconstruction import class2d

    path = out / "class2d.npz"
    saved = _reuse(out, "class2d", key, say, "2D classification", "class2d.npz")
    if saved is not None:
        fields = {f.name: saved[f.name] for f in dataclasses.fields(Class2DStage)}
        return Class2DStage(
            **{**fields, "seconds": float(fields["seconds"]), "box_px": int(fields["box_px"])}
        )
    t = time.perf_counter()
    n_classes = options.classes_for(ws.n)
    small = ws.for_resolution(options.resolution_A)
    say(f"2D classification: {n_classes} classes, box {small.box} px", 0.0)
    c2d = class2d.classify_2d(
        small,
        n_classes,
        np.random.default_rng([seed, 2]),
        n_iterations=options.iterations,
        resolution_A=options.resolution_A,
        min_score=options.min_score,
        min_fraction=options.min_fraction,
        batch_size=options.batch_size,
        progress=say,
    )
    write_mrc(out / "class_averages.mrcs", c2d.averages, small.pixel_size_A, stack=True)
    result = Class2DStage(
        c2d.assignment, c2d.selected, c2d.counts, c2d.scores, time.perf_counter() - t, small.box
    )
    _save_npz(path, **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
    _mark(out, "class2d", key)
    return result


def _one_abinitio(ws, small, subset, rng, options: ReconstructOptions, say) -> tuple:
    """One ab-initio map of particles ``subset`` at ``ws``'s box (in the full group's frame
    for a subgroup ab-initio) and what was found."""
    from pipeline.reconstruction import abinitio
    from pipeline.reconstruction.grids import change_box

    ab = options.abinitio
    full, sub = options.symmetry.strip().upper(), ab.symmetry_for(options.symmetry)
    judged: list[dict] = []

    def record(_maps, scores, best, meta):
        # each judging round: the held-out particles' score of every start in play
        starts = [int(k) + 1 for k in meta["starts"]]
        judged.append(
            {
                "iteration": int(meta["iteration"]),
                "scores": {str(k): round(float(s), 4) for k, s in zip(starts, scores, strict=True)},
                "best": starts[best],
            }
        )

    candidate = abinitio.abinitio(
        small,
        rng,
        subset=subset,
        n_iterations=ab.iterations,
        explore_iterations=max(1, int(ab.explore_fraction * ab.iterations + 1e-9)),
        progress=say,
        on_judged=record,
        **_option_kwargs(ab, _ABINITIO_KEYS),
    )
    candidate = np.asarray(change_box(candidate, ws.box))
    info = {"symmetry": sub, "box_px": small.box, "starts_judged": [judged]}
    if sub != full:
        candidate, turned = _into_full_group(
            candidate, sub, full, ws.pixel_size_A, say, ab.end_resolution_A, ab.consistent
        )
        info.update(turned)
    return candidate, info


def _halves_agreement(map1, map2, pix: float, symmetry: str) -> tuple[np.ndarray, float]:
    """``map2`` aligned onto ``map1`` (turn, shift, hand; symmetrised again for a point
    group) and how far (Å, FSC 0.5) the two agree."""
    from pipeline import backend
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.symmetry import symmetrise_volume

    aligned = apply_alignment(map2, align_maps(map2, map1, pix))
    if symmetry.strip().upper() != "C1":
        aligned = backend.to_numpy(symmetrise_volume(aligned, symmetry))
    agreement = resolution_at(fsc(map1, aligned), map1.shape[0], pix, 0.5)
    return np.asarray(aligned, dtype=np.float32), float(agreement)


def _independent_pair(ws, small, keep, halves, rng, options: ReconstructOptions, say) -> tuple:
    """Ab-initio maps of each half from its own particles, the second aligned onto the
    first; while they disagree (FSC 0.5 worse than ``agreement_factor`` × the ab-initio's
    end resolution) each half runs again, up to ``retries`` times, and the pair that
    agrees best is kept. Returns ((map1, map2), info)."""
    ab = options.abinitio
    pix = ws.pixel_size_A
    limit = ab.agreement_factor * max(ab.end_resolution_A, 2.2 * small.pixel_size_A)
    subsets = [keep[halves[keep] == h] for h in (0, 1)]
    runs: list[list] = [[], []]
    best = None
    for attempt in range(1 + max(0, ab.retries)):
        for h in (0, 1):

            def say_half(message, fraction=None, h=h, attempt=attempt):
                label = f"half {h + 1}" + (f", run {attempt + 1}" if attempt else "")
                say(f"{label}: {message}", None if fraction is None else (h + fraction) / 2)

            say_half.takes_fraction = True
            runs[h].append(_one_abinitio(ws, small, subsets[h], rng, options, say_half))
        # every new pair: the new maps against each other and against the earlier ones
        for i, (m1, info1) in enumerate(runs[0]):
            for j, (m2, _) in enumerate(runs[1]):
                if i < attempt and j < attempt:
                    continue
                aligned, agreement = _halves_agreement(m1, m2, pix, options.symmetry)
                if best is None or agreement < best[0]:
                    best = (agreement, m1, aligned, info1, (i, j))
        say(f"ab-initio: the halves' maps agree to {best[0]:.1f} Å (FSC 0.5; limit {limit:.1f} Å)")
        if best[0] <= limit:
            break
    agreement, m1, m2, info, pair = best
    info = {
        **info,
        # half 1's judging rounds, then half 2's
        "starts_judged": info["starts_judged"] + runs[1][pair[1]][1]["starts_judged"],
        "independent_halves": True,
        "halves_agreement_A": round(agreement, 2),
        "halves_agreement_limit_A": round(limit, 2),
        "halves_agree": bool(agreement <= limit),
        "runs_per_half": len(runs[0]),
        "pair_kept": [int(pair[0]) + 1, int(pair[1]) + 1],
    }
    return (m1, m2), info


def stage_abinitio(
    ws, keep, halves, out: Path, options: ReconstructOptions, key: str, say, say_refine
):
    """Ab-initio (several runs for some groups, each refined to choose between them) on
    particles cropped to the ab-initio's end resolution; with
    :attr:`AbinitioOptions.independent_halves` one per gold-standard half. Returns
    (initial maps (one per half) at the full box, info, the kept run's refinement or
    None, refinement seconds spent)."""
    from pipeline.io.mrc import read_mrc, write_mrc
    from pipeline.reconstruction import refine

    ab, symmetry = options.abinitio, options.symmetry
    path = out / "abinitio.mrc"
    files = ("abinitio.mrc", "abinitio_half2.mrc", "abinitio.json")
    if _reusable(out, "abinitio", key, *files):
        initial = (read_mrc(path)[0], read_mrc(out / "abinitio_half2.mrc")[0])
        say("ab-initio: reused", 1.0)
        return initial, json.loads((out / "abinitio.json").read_text()), None, 0.0
    t = time.perf_counter()
    pix = ws.pixel_size_A
    sub = ab.symmetry_for(symmetry)
    small = dataclasses.replace(ws.for_resolution(ab.end_resolution_A), symmetry=sub)
    say(f"ab-initio in {sub} on box {small.box} px", 0.0)
    attempts = ab.attempts_for(symmetry)
    rng = np.random.default_rng([options.seed, 3])
    starts, infos, results, fits = [], [], [], []
    refine_s = 0.0
    for attempt in range(attempts):

        def say_attempt(message, fraction=None, attempt=attempt):
            total = None if fraction is None else (attempt + fraction) / attempts
            say(message, total)

        say_attempt.takes_fraction = True
        if ab.independent_halves:
            pair, info = _independent_pair(ws, small, keep, halves, rng, options, say_attempt)
        else:
            candidate, info = _one_abinitio(ws, small, keep, rng, options, say_attempt)
            pair = (candidate, candidate)
        starts.append(pair)
        infos.append(info)
        if attempts == 1:
            break
        # refined in full: where a start leads shows only at the refined resolution
        t_refine = time.perf_counter()
        result = refine.refine(
            ws,
            pair,
            rng,
            subset=keep,
            halves=halves,
            **_refine_kwargs(options.refine),
            progress=say_refine,
        )
        fits.append(refine.particle_fit(ws, result, keep))
        results.append(result)
        refine_s += time.perf_counter() - t_refine
        say(
            f"ab-initio attempt {attempt + 1}/{attempts}: refined to "
            f"{result.resolution_A:.2f} Å, particles' fit {fits[-1]:.4g}"
        )
    kept = int(np.argmax(fits)) if fits else 0
    initial, info = starts[kept], infos[kept]
    refined = None
    if results:
        refined = results[kept]
        info["attempts"] = _attempt_records(results, fits, kept, pix)
    write_mrc(path, initial[0], pix)
    write_mrc(out / "abinitio_half2.mrc", initial[1], pix)
    info["seconds"] = time.perf_counter() - t - refine_s
    _write_text(out / "abinitio.json", json.dumps(info))
    _mark(out, "abinitio", key)
    return initial, info, refined, refine_s


#: options passed on by name to :func:`abinitio.abinitio` and :func:`refine.refine`
_ABINITIO_KEYS = (
    "batch_size",
    "start_resolution_A",
    "end_resolution_A",
    "forget",
    "posterior",
    "top_k",
    "samples",
    "temperature",
    "n_starts",
    "rounds",
    "keep_fraction",
)
_REFINE_KEYS = (
    "initial_resolution_A", "global_step_deg", "max_iterations", "global_iterations",
    "mask_radius_frac", "march_fraction", "settle_iterations", "grow_box", "top_k", "keep_best",
    "mask", "mask_references", "mask_lowpass_A", "mask_threshold_frac", "mask_extend_A",
    "mask_edge_A", "search_margin_px", "recheck_every", "recheck_resolution_A",
)  # fmt: skip


def _option_kwargs(options, keys: tuple[str, ...]) -> dict:
    return {name: getattr(options, name) for name in keys}


def _refine_kwargs(options: RefineOptions) -> dict:
    return _option_kwargs(options, _REFINE_KEYS)


@dataclasses.dataclass
class RefineStage:
    rotations: np.ndarray
    origins_px: np.ndarray
    halves: np.ndarray
    keep: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    history: list
    seconds: float


def stage_refine(ws, initial, keep, halves, refined, out: Path, options, key: str, say):
    """Gold-standard refinement of the halves ``halves`` (split before ab-initio), each
    from ``initial`` low-passed to ``RefineOptions.initial_resolution_A``; ``refined``
    is the kept ab-initio run's refinement when the runs were refined to choose."""
    from pipeline.io.mrc import read_mrc, write_mrc
    from pipeline.reconstruction import refine

    path = out / "refine.npz"
    saved = _reuse(out, "refine", key, say, "refinement", "refine.npz", "half1.mrc", "half2.mrc")
    if saved is not None:
        return RefineStage(
            saved["rotations"],
            saved["origins_px"],
            saved["halves"],
            saved["subset"],
            read_mrc(out / "half1.mrc")[0],
            read_mrc(out / "half2.mrc")[0],
            json.loads(str(saved["history"])),
            float(saved["seconds"]),
        )
    t = time.perf_counter()
    if refined is None:
        refined = refine.refine(
            ws,
            initial,
            np.random.default_rng([options.seed, 4]),
            subset=keep,
            halves=halves,
            **_refine_kwargs(options.refine),
            progress=say,
        )
    seconds = time.perf_counter() - t
    half1, half2 = refined.half_maps
    write_mrc(out / "half1.mrc", half1, ws.pixel_size_A)
    write_mrc(out / "half2.mrc", half2, ws.pixel_size_A)
    stage = RefineStage(
        refined.rotations,
        refined.origins_px,
        refined.halves,
        keep,
        half1,
        half2,
        refined.history,
        seconds,
    )
    _save_npz(
        path,
        rotations=stage.rotations,
        origins_px=stage.origins_px,
        halves=stage.halves,
        subset=keep,
        history=json.dumps(stage.history),
        seconds=seconds,
    )
    _mark(out, "refine", key)
    return stage


def stage_postprocess(
    half1, half2, pix: float, out: Path, seed: int, say, options: PostprocessOptions | None = None
) -> dict:
    """Solvent mask (:class:`PostprocessOptions`), mask-corrected FSC (phase randomisation, Chen et al. 2013) as the
    claimed resolution, Guinier B-factor, sharpened map, ``fsc.star`` and plots."""
    from pipeline import backend
    from pipeline.io.mrc import write_mrc
    from pipeline.plots.reconstruction import plot_fsc, plot_slices
    from pipeline.reconstruction import postprocess
    from pipeline.reconstruction.fsc import (
        fsc,
        fsc_without_spherical_average,
        last_resolution_at,
        mask_corrected_fsc,
        resolution_at,
        shell_frequencies,
    )
    from pipeline.reconstruction.grids import soft_sphere

    box = half1.shape[0]
    combined = 0.5 * (half1 + half2)
    options = options or PostprocessOptions()
    mask_kwargs = options.mask_kwargs(pix)
    mask = postprocess.soft_mask(combined, pix, **mask_kwargs)
    say("mask-corrected FSC", 0.2)
    corrected, masked, unmasked, shell = mask_corrected_fsc(
        half1, half2, mask, np.random.default_rng([seed, 5])
    )
    sphere = backend.to_numpy(soft_sphere(box, 0.45 * box))
    curve_sphere = fsc(half1 * sphere, half2 * sphere)
    # the agreement of what depends on orientation (a shell-only map has none)
    curve_aniso = fsc_without_spherical_average(half1 * sphere, half2 * sphere)
    corrected_resolution = resolution_at(corrected, box, pix, 0.143)
    unmasked_resolution = resolution_at(unmasked, box, pix, 0.143)
    resolution, correction_failed = _claim(corrected_resolution, unmasked_resolution, options)
    # the claim's curve weighs the sharpening: the unmasked one when the correction failed
    claim_curve = unmasked if correction_failed else corrected
    other = _other_mask_claim(half1, half2, combined, pix, seed, options)
    b_fit = postprocess.guinier_bfactor(combined * mask, pix, 10.0, max(resolution, 2 * pix))
    final = backend.to_numpy(postprocess.sharpen(combined, pix, b_fit, resolution, claim_curve))
    write_mrc(out / "mask.mrc", mask, pix)
    write_mrc(out / "map.mrc", final, pix)
    write_fsc_star(
        out / "fsc.star",
        corrected,
        box,
        pix,
        {
            "rlnFourierShellCorrelationMaskedMaps": masked,
            "rlnFourierShellCorrelationUnmaskedMaps": unmasked,
            "rlnFourierShellCorrelationSphereMaskedMaps": curve_sphere,
        },
    )
    plot_fsc(
        out / "fsc.png",
        shell_frequencies(box, pix),
        {
            "corrected (solvent mask, phase randomised)": corrected,
            "masked": masked,
            "unmasked": unmasked,
        },
        resolution,
    )
    plot_slices(out / "slices.png", final, f"{resolution:.2f} Å")
    return {
        "resolution_A": resolution,
        "resolution_mask_corrected_A": corrected_resolution,
        "mask_correction_failed": bool(correction_failed),
        "resolution_masked_uncorrected_A": resolution_at(masked, box, pix, 0.143),
        "resolution_unmasked_A": unmasked_resolution,
        "resolution_sphere_mask_A": resolution_at(curve_sphere, box, pix, 0.143),
        "resolution_without_spherical_average_A": last_resolution_at(curve_aniso, box, pix),
        "phase_randomised_from_A": round(box * pix / max(shell, 1), 2),
        "pixel_size_A": pix,
        "b_factor_A2": -b_fit,
        "guinier_b_A2": b_fit,
        "mask_edge_A": mask_kwargs["edge_A"],
        **other,
    }


def _claim(
    corrected_A: float, unmasked_A: float, options: PostprocessOptions
) -> tuple[float, bool]:
    """The claimed resolution (Å) from the mask-corrected and the unmasked FSC's, and whether
    the mask correction failed: worse than the unmasked claim by more than
    :attr:`PostprocessOptions.correction_tolerance` (the unmasked claim is then used)."""
    failed = corrected_A > (1.0 + options.correction_tolerance) * unmasked_A
    return (unmasked_A if failed else corrected_A), bool(failed)


def _other_mask_claim(half1, half2, combined, pix: float, seed: int, options) -> dict:
    """The claim again with the other soft edge (:attr:`PostprocessOptions.check_edge_px`
    when the default edge is used, else the minimum edge): ``other_mask_edge_A`` and
    ``resolution_other_mask_A``; empty when both edges are the same at this pixel size."""
    from pipeline.reconstruction import postprocess
    from pipeline.reconstruction.fsc import mask_corrected_fsc, resolution_at

    if options.mask_edge_px > 0:
        other = dataclasses.replace(options, mask_edge_px=0.0, mask_extend_px=0.0)
    else:
        edge = options.check_edge_px
        other = dataclasses.replace(options, mask_edge_px=edge, mask_extend_px=edge / 2)
    kwargs = other.mask_kwargs(pix)
    if kwargs == options.mask_kwargs(pix):
        return {}
    mask = postprocess.soft_mask(combined, pix, **kwargs)
    corrected, _, unmasked, _ = mask_corrected_fsc(
        half1, half2, mask, np.random.default_rng([seed, 5])
    )
    box = half1.shape[0]
    claim, _ = _claim(
        resolution_at(corrected, box, pix, 0.143), resolution_at(unmasked, box, pix, 0.143), options
    )
    return {"other_mask_edge_A": kwargs["edge_A"], "resolution_other_mask_A": claim}


def _options_from(
    options: ReconstructOptions | None,
    symmetry: str | None,
    n_classes: int | None,
    class_iterations: int | None,
    abinitio_iterations: int | None,
    refine_iterations: int | None,
    seed: int | None,
) -> ReconstructOptions:
    """``options`` (default :class:`ReconstructOptions`) with the legacy keywords applied."""
    opts = options or ReconstructOptions()
    c2d, ab, ref = opts.class2d, opts.abinitio, opts.refine
    if n_classes is not None:
        c2d = dataclasses.replace(c2d, n_classes=n_classes)
    if class_iterations is not None:
        c2d = dataclasses.replace(c2d, iterations=class_iterations)
    if abinitio_iterations is not None:
        ab = dataclasses.replace(ab, iterations=abinitio_iterations)
    if refine_iterations is not None:
        ref = dataclasses.replace(ref, max_iterations=refine_iterations)
    return dataclasses.replace(
        opts,
        symmetry=opts.symmetry if symmetry is None else symmetry,
        seed=opts.seed if seed is None else seed,
        class2d=c2d,
        abinitio=ab,
        refine=ref,
    )


def run_reconstruction(
    particles_star: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ReconstructOptions | None = None,
    *,
    symmetry: str | None = None,
    n_classes: int | None = None,
    class_iterations: int | None = None,
    abinitio_iterations: int | None = None,
    refine_iterations: int | None = None,
    seed: int | None = None,
    progress=None,
) -> dict:
    """Run (or resume) the whole reconstruction; returns the ``result.json`` content.

    ``options`` holds every setting; the keywords override its most used ones.
    ``progress``: a :class:`progress.Progress`, or a callable taking one message.
    """
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.progress import Progress
    from pipeline.reconstruction.refine import split_halves
    from pipeline.reconstruction.symmetry import symmetry_matrices
    from pipeline.reconstruction.workspace import build_workspace

    opts = _options_from(
        options, symmetry, n_classes, class_iterations, abinitio_iterations,
        refine_iterations, seed,
    )  # fmt: skip
    symmetry_matrices(opts.symmetry)  # validate early
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(progress, Progress):
        tracker = progress
        tracker.path = out / "progress.json"
    else:
        tracker = Progress(out, sink=progress)
    timings: dict[str, float] = {}
    # CPU seconds of this process (every thread) per stage, from stage start to stage
    # start: comparable under load where wall times are not; ab-initio's include the
    # refinements of its attempts (which timings count under refine_s)
    cpu_seconds: dict[str, float] = {}
    cpu_mark = [time.process_time()]

    def cpu_stage(name: str) -> None:
        now = time.process_time()
        cpu_seconds[name] = round(now - cpu_mark[0], 2)
        cpu_mark[0] = now

    say = tracker.stage("load")
    t0 = time.perf_counter()
    particles = load_particles(particles_star)
    n_cls = opts.class2d.classes_for(len(particles))
    if n_cls < 1:
        raise ReconstructionError(f"--classes must be at least 1 (got {n_cls})")
    if len(particles) < n_cls:
        raise ReconstructionError(
            f"{particles_star}: {len(particles)} particles are fewer than the {n_cls} 2D classes"
        )
    if len(particles) < 20:
        raise ReconstructionError(
            f"{particles_star}: {len(particles)} particles are too few for a gold-standard reconstruction"
        )
    pix = particles.pixel_size_A
    _, stacks = particles.table.image_locations()
    key0 = stage_key(inputs_digest(particles_star, stacks), code_version())
    ws = build_workspace(
        particles.images,
        particles.ctf_params,
        pix,
        opts.symmetry,
        chunk=opts.chunk,
        progress=lambda f: say(f"reading {len(particles)} particles", f),
        resident_MB=opts.resident_MB,
    )
    if ws.streamed:
        say(
            f"{len(particles)} particles of box {ws.box} stream from disk (more than "
            f"{opts.resident_MB:g} MB at the full box)"
        )
    timings["load_s"] = time.perf_counter() - t0
    cpu_stage("load_s")

    say = tracker.stage("class2d")
    key_2d = stage_key(key0, opts.seed, dataclasses.asdict(opts.class2d))
    c2d = stage_class2d(ws, out, opts.class2d, opts.seed, key_2d, say)
    timings["class2d_s"] = c2d.seconds
    cpu_stage("class2d_s")
    if opts.keep_classes is not None:
        c2d = dataclasses.replace(c2d, selected=chosen_classes(c2d.counts, opts.keep_classes))
        say(f"2D classes kept by hand: {', '.join(str(c) for c in opts.keep_classes)}", 1.0)
    keep = c2d.keep
    # gold-standard halves, split before ab-initio and kept to the end
    halves = split_halves(keep, ws.n, np.random.default_rng([opts.seed, 1]))

    say = tracker.stage("abinitio")
    # several ab-initio runs are each refined to choose one: then refinement options count
    refines = opts.abinitio.attempts_for(opts.symmetry) > 1
    key_ab = stage_key(
        key_2d,
        opts.keep_classes,
        opts.symmetry,
        dataclasses.asdict(opts.abinitio),
        dataclasses.asdict(opts.refine) if refines else None,
    )
    say_refine = tracker_stage_alias(tracker, "refine")
    initial, abinitio_info, refined, refine_s = stage_abinitio(
        ws, keep, halves, out, opts, key_ab, say, say_refine
    )
    timings["abinitio_s"] = float(abinitio_info["seconds"])
    cpu_stage("abinitio_s")

    say = tracker.stage("refine")
    key_ref = stage_key(key_ab, dataclasses.asdict(opts.refine))
    ref = stage_refine(ws, initial, keep, halves, refined, out, opts, key_ref, say)
    timings["refine_s"] = ref.seconds + refine_s
    cpu_stage("refine_s")

    say = tracker.stage("postprocess")
    t = time.perf_counter()
    post = stage_postprocess(ref.half1, ref.half2, pix, out, opts.seed, say, opts.postprocess)
    post["particle_support"] = _particle_support(ws, ref, opts)
    _write_particles(
        out, particles, ref.keep, ref.rotations, ref.origins_px, ref.halves, c2d.assignment
    )
    timings["postprocess_s"] = time.perf_counter() - t
    timings["total_s"] = sum(v for k, v in timings.items() if k.endswith("_s"))
    cpu_stage("postprocess_s")
    cpu_seconds["total_s"] = round(sum(cpu_seconds.values()), 2)
    warnings = _warnings(abinitio_info, post, opts)
    for warning in warnings:
        tracker.update(f"warning: {warning}", None)
    result_json = {
        **post,
        "n_particles": int(len(ref.keep)),
        "n_particles_input": int(len(particles)),
        "classes_kept": [int(c) + 1 for c in np.flatnonzero(c2d.selected)],
        "class_counts": [int(c) for c in c2d.counts],
        "class_scores": [float(s) for s in c2d.scores],
        "symmetry": opts.symmetry,
        "pixel_size_A": pix,
        "box_px": ws.box,
        "boxes_px": {"class2d": c2d.box_px, "abinitio": abinitio_info.get("box_px")},
        "halves": (
            "split before ab-initio; each half has its own ab-initio map (from its own "
            "particles, aligned onto the other's) and is refined from it"
            if opts.abinitio.independent_halves
            else "split before ab-initio; each half refined from the shared ab-initio map"
        )
        + f" low-passed to {opts.refine.initial_resolution_A:g} Å",
        "refine_history": ref.history,
        "abinitio": {k: v for k, v in abinitio_info.items() if k != "seconds"},
        "warnings": warnings,
        "options": opts.to_dict(),
        "code_version": code_version(),
        "timings": timings,
        "cpu_seconds": cpu_seconds,
    }
    _write_text(out / "result.json", json.dumps(result_json, indent=2))
    tracker.finish()
    return result_json


def _particle_support(ws, ref, options: ReconstructOptions) -> dict:
    """The resolution the refined particles support (:func:`support.particle_support`)
    beside the half-maps' own (unmasked FSC 0.143), for ``result.json``."""
    from pipeline.reconstruction.support import particle_support
    from pipeline.reconstruction.symmetry import symmetry_matrices

    post = options.postprocess
    sup = particle_support(
        ws,
        (ref.half1, ref.half2),
        ref.rotations,
        ref.origins_px,
        ref.halves,
        ref.keep,
        n_sym=len(symmetry_matrices(options.symmetry)),
        gain=post.support_gain,
        max_particles=post.support_particles,
        rng=np.random.default_rng([options.seed, 6]),
    )
    return {
        "supported_A": round(sup.supported_A, 2),
        "halves_A": round(sup.halves_A, 2),
        "n_particles": int(len(ref.keep)),
    }


def tracker_stage_alias(tracker, name: str):
    """A reporter for refinements run inside the ab-initio stage (its attempts): messages
    only, the ab-initio stage keeps the bar."""

    def say(message=None, fraction=None):
        tracker.update(message, None)

    say.takes_fraction = True
    return say


def _write_particles(out, particles, keep, rotations, origins, halves, assignment) -> None:
    """``particles.star`` and ``particles.cs`` of the refined particles with their poses."""
    from pipeline.geometry import matrix_to_euler
    from pipeline.io.cs import write_cs
    from pipeline.io.particles import ParticleTable, write_particles_star

    table = particles.table
    rows = table.particles.iloc[keep].copy()
    # image paths: kept when absolute or relative to the project (run) folder, as RELION
    # keeps them; those relative to the input STAR's folder made relative to the output
    source = Path(particles.star_path).resolve().parent
    names = []
    for name in rows["rlnImageName"].astype(str):
        idx, _, stack = name.partition("@")
        if Path(stack).is_absolute() or not (source / stack).exists():
            names.append(name)
        else:
            names.append(f"{idx}@{os.path.relpath(source / stack, Path(out).resolve())}")
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
